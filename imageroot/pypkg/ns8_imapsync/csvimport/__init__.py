"""import-csv-tasks: many sync tasks from one CSV file, with create-task's rules.

- `parse`: the bytes on stdin to numbered rows (encoding, delimiter, quoting,
  columns), or one clear error for a file that cannot be read safely;
- `plan`: each row to a create-task request and what to do with it (create,
  update, skip, fail), with the values checked as create-task checks them;
- `apply`: the remote logins checked in one container call from a private
  staging directory, then the tasks moved into place, scheduled and started;
- `report`: the per-row outcome (terminal lines, summary, `--report` CSV).
"""
