*** Settings ***
Documentation     Task options with their effect on both servers: inbox mode marks the
...               remote messages \\Seen and never copies them twice, delete_remote_older
...               deletes only the old remote messages, and Sieve files the copies.
Resource          node.resource
Suite Teardown    Delete every task

*** Test Cases ***
Inbox mode marks the remote messages seen and copies them once
    Deliver to the remote    robot-inbox    count=3
    ${n} =    Remote count    robot-inbox    flag=--unseen
    Should Be Equal As Integers    ${n}    3
    Create a task    rbt002    folders=inbox
    ${props} =    Wait until the task is idle    rbt002
    Should Be Equal    ${props['last_sync_state']}    succeeded
    ${n} =    Local count    robot-inbox
    Should Be Equal As Integers    ${n}    3
    ${n} =    Remote count    robot-inbox    flag=--seen
    Should Be Equal As Integers    ${n}    3    msg=every copied message is \\Seen on the remote
    ${props} =    Start a task and wait    rbt002
    Should Be Equal    ${props['last_sync_state']}    succeeded
    ${n} =    Local count    robot-inbox
    Should Be Equal As Integers    ${n}    3    msg=a second run copies nothing again
    [Teardown]    Delete a task    rbt002

Delete_remote_older deletes only old remote messages, once copied
    Deliver to the remote    robot-old    count=2    days_old=30
    Deliver to the remote    robot-new    count=2
    Create a task    rbt003    delete_remote=true    older=10
    ${props} =    Wait until the task is idle    rbt003
    Should Be Equal    ${props['last_sync_state']}    succeeded
    Should Be True    ${props['delete_remote']}
    Should Be Equal As Integers    ${props['delete_remote_older']}    10
    ${old} =    Local count    robot-old
    ${new} =    Local count    robot-new
    Should Be Equal As Integers    ${old}    2
    Should Be Equal As Integers    ${new}    2
    ${old} =    Remote count    robot-old
    ${new} =    Remote count    robot-new
    Should Be Equal As Integers    ${old}    0    msg=messages older than 10 days are deleted from the remote
    Should Be Equal As Integers    ${new}    2    msg=recent messages stay on the remote
    [Teardown]    Delete a task    rbt003

Sieve files the copies where the user's script says
    Put a sieve script for the local user
    ...    require ["fileinto", "mailbox"]; if header :contains "subject" "[robot-sieve]" { fileinto :create "RobotSieve"; }
    Deliver to the remote    [robot-sieve] filed    count=2
    Deliver to the remote    robot-unfiled
    Create a task    rbt004    folders=inbox    sieve=true
    ${props} =    Wait until the task is idle    rbt004
    Should Be Equal    ${props['last_sync_state']}    succeeded
    Should Be True    ${props['sieve_enabled']}
    ${filed} =    Local count    [robot-sieve] filed    folder=RobotSieve
    ${inbox} =    Local count    [robot-sieve] filed
    ${plain} =    Local count    robot-unfiled
    Should Be Equal As Integers    ${filed}    2
    Should Be Equal As Integers    ${inbox}    0    msg=filed copies are not left in the INBOX
    Should Be Equal As Integers    ${plain}    1
    [Teardown]    Delete a task    rbt004
