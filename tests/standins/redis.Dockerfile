# Stand-in for redis:<7.x>-alpine: Debian's Redis 7, working in /data as there.
FROM standin/debian:bookworm
WORKDIR /data
EXPOSE 6379
CMD ["redis-server", "--protected-mode", "no"]
