*** Settings ***
Documentation     Install a mail server (on NS8: an LDAP user domain with u1 u2 u3 and a mail
...               module; the local node has its mail1), then the module, and configure it.
Resource          node.resource

*** Variables ***
${USER_DOMAIN}    ldap.dom.test

*** Test Cases ***
Install the mail server
    IF    ${LOCAL}
        ${out} =    Run on node    runagent -l
        ${mid} =    Evaluate    [m for m in $out.split() if m.startswith('mail')][0]
    ELSE
        ${mid} =    Install an NS8 mail server
        Use the NS8 mail module    ${mid}
    END
    Set Global Variable    ${MID}    ${mid}

Install the module
    ${out} =    Run on node    add-module ${IMAGE_URL} 1
    ${added} =    Evaluate    ast.literal_eval($out)    modules=ast
    Should Start With    ${added['module_id']}    imapsync
    Set Global Variable    ${imapsync_module_id}    ${added['module_id']}

Configure the module
    ${conf} =    Wait until a mail server is offered
    ${uuid}    ${host} =    Split String    ${conf['mail_server_URL'][0]['value']}    ,    1
    Module task    configure-module    {"mail_server": "${uuid}", "mail_host": "${host}"}
    ${conf} =    Module task    get-configuration
    Should Be Equal    ${conf['mail_server']}    ${uuid}
    Should Be Equal    ${conf['mail_host']}    ${host}
    Set Global Variable    ${mail_host}    ${host}

The sync service runs
    ${state} =    Run on node    runagent -m ${imapsync_module_id} systemctl --user is-active imapsync.service
    Should Be Equal    ${state}    active
    ${pw} =    Run on node    runagent -m ${imapsync_module_id} stat -c %a imapsync/vmail.pwd
    Should Be Equal    ${pw}    600

*** Keywords ***
Wait until a mail server is offered
    FOR    ${i}    IN RANGE    30
        ${conf} =    Module task    get-configuration
        IF    len($conf['mail_server_URL']) > 0
            RETURN    ${conf}
        END
        Sleep    2s
    END
    Fail    get-configuration offers no mail server

Install an NS8 mail server
    [Documentation]    An internal LDAP user domain with u1 u2 u3, and a mail module bound to it.
    ${ldap} =    Run task    cluster/add-internal-provider    {"image": "openldap", "node": 1}
    Set Global Variable    ${LDAP_MID}    ${ldap['module_id']}
    Run task    module/${LDAP_MID}/configure-module
    ...    {"domain": "${USER_DOMAIN}", "admuser": "admin", "admpass": "${USER_PASSWORD}", "provision": "new-domain"}
    FOR    ${user}    IN    u1    u2    u3
        Run task    module/${LDAP_MID}/add-user
        ...    {"user": "${user}", "display_name": "User ${user}", "password": "${USER_PASSWORD}"}
    END
    ${out} =    Run on node    add-module ${MAIL_IMAGE_URL} 1
    ${mail} =    Evaluate    ast.literal_eval($out)    modules=ast
    Run task    module/${mail['module_id']}/configure-module
    ...    {"hostname": "mail.domain.test", "mail_domain": "domain.test", "user_domain": "${USER_DOMAIN}"}
    RETURN    ${mail['module_id']}
