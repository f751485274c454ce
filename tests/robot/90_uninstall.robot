*** Settings ***
Documentation     remove-module takes the module away (and, on NS8, the mail server and user
...               domain the suites installed).
Resource          node.resource

*** Test Cases ***
Remove the module
    Run on node    remove-module --no-preserve ${imapsync_module_id}
    ${agents} =    Run on node    runagent -l
    Should Not Contain    ${agents.split()}    ${imapsync_module_id}
    ${rc}    ${out}    ${err} =    Execute on node    runagent -m ${imapsync_module_id} true
    Should Not Be Equal As Integers    ${rc}    0    msg=runagent still finds ${imapsync_module_id}

Remove the mail server
    Skip If    ${LOCAL}    the local node's mail1 belongs to the node
    Run on node    remove-module --no-preserve ${MID}
    Run task    cluster/remove-internal-domain    {"domain": "ldap.dom.test"}
