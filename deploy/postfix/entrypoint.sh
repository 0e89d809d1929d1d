#!/bin/sh
# Fill in what docker-compose.yml decides, then run Postfix in the foreground (its logs on stdout).
set -e
postconf -e "smtpd_milters = ${MILTERD_ADDRESS:-inet:milterd:11332}" \
            "mydestination = localhost, ${MAIL_DOMAIN:-example.test}" \
            "maillog_file = /dev/stdout"
exec postfix start-fg
