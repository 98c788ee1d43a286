# Stand-in for python:3.11-slim-bookworm: Debian's Python 3.11, in /usr/local/bin as there.
FROM standin/debian:bookworm
RUN ln -s /usr/bin/python3 /usr/local/bin/python3 \
    && ln -s /usr/bin/python3 /usr/local/bin/python \
    && ln -s /usr/bin/python3.11 /usr/local/bin/python3.11
# This network re-signs TLS: the image trusts the host's CA bundle, and uv reads it.
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
ENV UV_NATIVE_TLS=1
CMD ["python3"]
