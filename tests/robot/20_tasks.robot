*** Settings ***
Documentation     Tasks end to end: mail arrives, what list-tasks, list-informations and
...               get-log say about it, the shared namespaces are never synced, a stopped
...               sync keeps the task's records, and delete-task leaves no file.
Resource          node.resource
Suite Teardown    Delete every task

*** Variables ***
${TASK}           rbt001
${SUBJECT}        robot-arrives

*** Test Cases ***
Create a task and see mail arrive
    Deliver to the remote    ${SUBJECT}    count=5
    Create a task    ${TASK}
    ${props} =    Wait until the task is idle    ${TASK}
    Should Be Equal    ${props['last_sync_state']}    succeeded
    ${n} =    Local count    ${SUBJECT}
    Should Be Equal As Integers    ${n}    5

Read the task back from list-tasks after a sync
    ${props} =    Task properties    ${TASK}
    Should Be Equal    ${props['remoteusername']}    ${REMOTE_USER}
    Should Be String    ${props['remoteport']}    msg=remoteport comes back as a string
    Should Be Equal As Integers    ${props['remoteport']}    ${REMOTE_PORT}
    Should Be Equal    ${props['remotepassword']}    ${EMPTY}    msg=the password is never shown
    Should Be Equal    ${props['security']}    tls
    Should Be Equal    ${props['foldersynchronization']}    all
    Should Be Equal    ${props['cron']}    ${EMPTY}
    Should Not Be True    ${props['delete_remote']} or ${props['service_running']}
    Should Be Equal    ${props['state']}    succeeded
    Should Be Equal As Integers    ${props['last_sync_exit_code']}    0
    Should Be True    ${props['last_sync_timestamp']} > 0 and ${props['has_log']}
    Should Be True    ${props['last_sync_listed']} >= 5
    Should Be Equal    ${props['last_sync_listed']}    ${props['last_sync_found']}
    Should Be Empty    ${props['last_sync_short_folders']}

Count folders and messages with list-informations
    ${info} =    Module task    list-informations    {"localuser": "${LOCAL_USER}", "task_id": "${TASK}"}
    Should Be True    ${info['status']}
    Should Be True    ${info['host1Messages']} >= 5 and ${info['host1Folders']} >= 1
    Should Be True    ${info['host2Messages']} >= ${info['host1Messages']}
    Should Be True    ${info['host1Sizes']} > 0 and ${info['host2Sizes']} >= ${info['host1Sizes']}

Read the task log with get-log
    ${log} =    Module task    get-log    {"localuser": "${LOCAL_USER}", "task_id": "${TASK}"}
    Should Not Be Empty    ${log['log_content']}
    Should Not Contain    ${log['log_content']}    ${REMOTE_PASSWORD}
    Should Not Be True    ${log['truncated']}

Get-log of a task that does not exist is empty
    ${log} =    Module task    get-log    {"localuser": "${LOCAL_USER}", "task_id": "nosuch"}
    Should Be Equal    ${log['log_content']}    ${EMPTY}
    Should Not Be True    ${log['truncated']}

Get-log refuses path traversal and bad ids
    FOR    ${input}    IN
    ...    {"localuser": "${LOCAL_USER}", "task_id": "../../environment"}
    ...    {"localuser": "${LOCAL_USER}", "task_id": "a/b"}
    ...    {"localuser": "../u2", "task_id": "${TASK}"}
    ...    {"localuser": "U2 ", "task_id": "${TASK}"}
    ...    {"localuser": "${LOCAL_USER}"}
        ${err} =    Run task and get the error    module/${imapsync_module_id}/get-log    ${input}
        Should Contain    ${err}    Validation errors
    END

Get-log returns the last 100 KiB of a large log
    Run on node    runagent -m ${imapsync_module_id} python3 -c "import pathlib; pathlib.Path('imapsync/${LOCAL_USER}_${TASK}.log').write_text(''.join(f'line {i:06d} of a long log\\n' for i in range(8000)))"
    ${log} =    Module task    get-log    {"localuser": "${LOCAL_USER}", "task_id": "${TASK}"}
    Should Be True    ${log['truncated']}
    ${size} =    Get Length    ${log['log_content']}
    Should Be True    90000 < ${size} <= 102400
    Should End With    ${log['log_content']}    line 007999 of a long log\n
    Should Start With    ${log['log_content']}    line    msg=a partial first line is dropped

Never sync the Shared and Public namespaces
    ${sep} =    Set Variable    ${REMOTE_SEP}
    FOR    ${folder}    IN    Public    Public${sep}RobotSub    Shared    Shared${sep}robot${sep}Box
        Run on node    ${REMOTE_DOVEADM} mailbox create -u ${REMOTE_USER} '${folder}'    rc=any
    END
    IF    ${LOCAL}
        Deliver to the remote    robot-public    folder=Public/RobotSub
        Deliver to the remote    robot-shared    folder=Shared/robot/Box
    END
    ${props} =    Start a task and wait    ${TASK}
    Should Be Equal    ${props['last_sync_state']}    succeeded
    ${folders} =    Local folders
    FOR    ${folder}    IN    Public/RobotSub    Shared/robot/Box    Shared/robot
        Should Not Contain    ${folders}    ${folder}
    END
    ${log} =    Module task    get-log    {"localuser": "${LOCAL_USER}", "task_id": "${TASK}"}
    Should Not Match Regexp    ${log['log_content']}    NOPERM|Could not select

Stop a running sync and keep the task's records
    [Documentation]    The task is pointed (in its file, as an administrator could) at a port
    ...                that accepts and never answers, so its run hangs until stopped.
    ${before} =    Task properties    ${TASK}
    ${port} =    Run on node    ${PYTHON} ${MAILTOOL} blackhole --seconds 120
    ${file} =    Set Variable    imapsync/${LOCAL_USER}_${TASK}.env
    Run on node    runagent -m ${imapsync_module_id} cp ${file} ${file}.robot-saved
    Run on node    runagent -m ${imapsync_module_id} sed -i -e 's/^REMOTEHOSTNAME=.*/REMOTEHOSTNAME=127.0.0.1/' -e 's/^REMOTEPORT=.*/REMOTEPORT=${port}/' -e 's/^SECURITY=.*/SECURITY=/' ${file}
    Module task    start-task    {"localuser": "${LOCAL_USER}", "task_id": "${TASK}"}
    Wait until the task runs    ${TASK}
    Module task    stop-task    {"localuser": "${LOCAL_USER}", "task_id": "${TASK}"}
    ${props} =    Task properties    ${TASK}
    Should Not Be True    ${props['service_running']}
    Should Be Equal    ${props['state']}    stopped
    ...    msg=a run stopped while its server never answered is recorded as stopped, not as its connection error
    Should Be True    ${props['last_sync_timestamp']} >= ${before['last_sync_timestamp']}
    Should Be Equal    ${props['remoteusername']}    ${before['remoteusername']}
    ${n} =    Local count    ${SUBJECT}
    Should Be Equal As Integers    ${n}    5    msg=the stop took no mail away
    Module task    stop-task    {"localuser": "${LOCAL_USER}", "task_id": "${TASK}"}
    Restore the task file    ${file}
    ${props} =    Start a task and wait    ${TASK}
    Should Be Equal    ${props['last_sync_state']}    succeeded
    [Teardown]    Restore the task file    ${file}

Delete a task and leave no file behind
    ${files} =    Task files    ${LOCAL_USER}_${TASK}
    Should Not Be Empty    ${files}
    Delete a task    ${TASK}
    ${result} =    Module task    list-tasks
    ${ids} =    Evaluate    [t['task_id'] for t in $result['user_properties']]
    Should Not Contain    ${ids}    ${TASK}
    ${files} =    Task files    ${LOCAL_USER}_${TASK}
    Should Be Empty    ${files}

*** Keywords ***
Restore the task file
    [Arguments]    ${file}
    Run on node    runagent -m ${imapsync_module_id} sh -c 'if [ -e ${file}.robot-saved ]; then mv ${file}.robot-saved ${file}; fi'
