#!/bin/sh
# Creates the stack's databases on the first start of the postgres container
# (its entrypoint runs /docker-entrypoint-initdb.d/*.sh once, on an empty data
# volume): one database per name in APP_DATABASES (compose.yaml sets
# "orchestrator prefect": the lead store and the Prefect server's), each owned
# by a login role of the same name whose password is POSTGRES_PASSWORD.
#
# Also reads POSTGRES_USER and POSTGRES_DB, as the image does. Whether the
# entrypoint executes or sources it, it stops at the first failed statement.
# psql passes the names and the password as quoted variables, never pasted
# into the SQL text.
set -e

for name in ${APP_DATABASES:?APP_DATABASES: the names of the databases to create}; do
    psql --no-psqlrc --set ON_ERROR_STOP=1 \
        --username "${POSTGRES_USER:-postgres}" --dbname "${POSTGRES_DB:-postgres}" \
        --set name="$name" --set password="${POSTGRES_PASSWORD:?POSTGRES_PASSWORD is required}" <<'SQL'
CREATE ROLE :"name" LOGIN PASSWORD :'password';
CREATE DATABASE :"name" OWNER :"name";
SQL
done
