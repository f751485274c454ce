"""update-module and restore-module on the local node: old state upgraded, binding restored."""

from __future__ import annotations

from localnode import cluster, redisd
from localnode.runner import read_envfile

REFERENCE_ENV = (
    "\nTASK_ID=ref001\nLOCALUSER=u2\nREMOTEUSERNAME=bob@remote.test\nREMOTEHOSTNAME={host}\n"
    "REMOTEPORT={port}\nSECURITY=--tls1\nDELETE_LOCAL=\nDELETEFOLDER=\nEXCLUDE=,Junk,Drafts\n"
    "DELETE_REMOTE=--delete1older=15\nSIEVE_ENABLED=\nEXPUNGE_REMOTE=\nCRON=15m\nFOLDER_INBOX=\n"
    "FOLDERSYNCHRONIZATION=exclusion\n"
)


def test_update_module_upgrades_reference_task_files(cli, localnode, configured) -> None:
    state = localnode.module_state_dir("imapsync1")
    r = localnode.remote
    env = state / "imapsync" / "u2_ref001.env"
    env.write_text(REFERENCE_ENV.format(host=r.host, port=r.imap_port))
    (state / "imapsync" / "u2_ref001.pwd").write_text(r.users["bob@remote.test"] + "\n")
    broken = state / "imapsync" / "u2_broken.env"
    broken.write_text("TASK_ID=broken\n")  # no LOCALUSER: must be left alone, not deleted
    try:
        proc = cli.api("module/imapsync1/update-module", {"module_url": "ghcr.io/nethserver/imapsync:latest",
                                                          "force": False})
        assert proc.returncode == 0, proc.stderr
        assert "FORMAT_VERSION=2" in env.read_text()
        (item,) = [t for t in cli.api_ok("module/imapsync1/list-tasks")["user_properties"]
                   if t["task_id"] == "ref001"]
        assert (item["security"], item["delete_remote"], item["delete_remote_older"]) == ("tls", True, 15)
        assert (item["exclude"], item["cron"], item["foldersynchronization"]) == ("Junk,Drafts", "15m", "exclusion")
        # the service restart regenerated the schedule
        assert "*/15 * * * * root /usr/local/bin/syncctl start u2_ref001" in \
            (state / "cron" / "u2_ref001.cron").read_text()
        assert broken.read_text() == "TASK_ID=broken\n"
        assert "could not be read" in (localnode.log_dir / "journal.log").read_text()
    finally:
        cli.api_ok("module/imapsync1/delete-task", {"localuser": "u2", "task_id": "ref001"})
        broken.unlink(missing_ok=True)


def test_restore_module_rebinds_the_mail_server(cli, localnode, configured) -> None:
    state = localnode.module_state_dir("imapsync1")
    env_file = state / "environment"
    saved = read_envfile(env_file)
    try:
        unbound = {k: v for k, v in saved.items() if not k.startswith("MAIL_")}
        cluster.write_env(env_file, unbound)
        # a backup from another cluster: its mail server UUID is unknown here
        cli.api_ok("module/imapsync1/restore-module",
                   {"environment": {"MAIL_SERVER": "11111111-2222-4333-8444-555555555555", "MAIL_HOST": "10.9.9.9"}})
        after = read_envfile(env_file)
        assert after["MAIL_SERVER"] == configured["mail_server"]  # the only mail server here
        assert after["MAIL_HOST"] == localnode.mail1.host  # fresh, not the backup's
        proc = cli.run("runagent", "-m", "imapsync1", "systemctl", "--user", "is-active", "imapsync")
        assert proc.stdout.strip() == "active"
        assert redisd.connect(localnode).hget("module/imapsync1/environment", "MAIL_SERVER") == \
            configured["mail_server"]
    finally:
        cluster.write_env(env_file, saved)
