*** Settings ***
Documentation     import-csv-tasks: tasks from a CSV file, a refused row, a re-import skipped.
Resource          node.resource
Library           Collections
Suite Teardown    Delete every task

*** Variables ***
${CSV}            /tmp/robot-users.csv

*** Test Cases ***
Import a task from a CSV file
    ${host} =    Set Variable If    ${LOCAL}    ${REMOTE_HOST}    ${mail_host}
    Run on node    printf '%s\\n' 'localusername,remoteusername,remotepassword,remotehostname,remoteport,security,cron' '${LOCAL_USER},${REMOTE_USER},"${REMOTE_PASSWORD}",${host},${REMOTE_PORT},tls,' > ${CSV}
    ${out} =    Run on node    runagent -m ${imapsync_module_id} import-csv-tasks --no-start < ${CSV}
    Should Contain    ${out}    1 created, 0 updated, 0 skipped, 0 failed
    ${result} =    Module task    list-tasks
    ${tasks} =    Create List
    FOR    ${task}    IN    @{result['user_properties']}
        IF    $task['remoteusername'] == $REMOTE_USER
            Append To List    ${tasks}    ${task}
        END
    END
    Length Should Be    ${tasks}    1
    Should Match Regexp    ${tasks[0]['task_id']}    ^[a-z0-9]{6}$
    Should Be Equal    ${tasks[0]['security']}    tls
    Should Be Equal    ${tasks[0]['foldersynchronization']}    all

Import the same file again and skip the row
    ${out} =    Run on node    runagent -m ${imapsync_module_id} import-csv-tasks --no-start < ${CSV}
    Should Contain    ${out}    0 created, 0 updated, 1 skipped, 0 failed

Refuse a row whose login fails and create nothing
    ${host} =    Set Variable If    ${LOCAL}    ${REMOTE_HOST}    ${mail_host}
    Run on node    printf '%s\\n' 'localusername,remoteusername,remotepassword,remotehostname,remoteport,security' 'u3,${REMOTE_USER},wrong-password,${host},${REMOTE_PORT},tls' > ${CSV}
    ${out} =    Run on node    runagent -m ${imapsync_module_id} import-csv-tasks --no-start < ${CSV}    rc=1
    Should Contain    ${out}    refused the user or password
    ${result} =    Module task    list-tasks
    ${users} =    Evaluate    [t['localuser'] for t in $result['user_properties']]
    Should Not Contain    ${users}    u3
    [Teardown]    Run on node    rm -f ${CSV}
