# Look-alikes of the official postgres, redis and nginx images, for CI where no registry can
# be reached: Debian's packages on a base made by debootstrap (tests/support/docker.py), with
# the entry points deploy/compose.cpu.yaml relies on. `docker build --target postgres` etc.
ARG BASE=embedgate-ci/services:bookworm

FROM ${BASE} AS postgres
COPY postgres-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
RUN ln -s /usr/lib/postgresql/*/bin /usr/local/lib/postgresql-bin \
    && chmod 0755 /usr/local/bin/docker-entrypoint.sh
ENV PATH=/usr/local/lib/postgresql-bin:$PATH PGDATA=/var/lib/postgresql/data
VOLUME ["/var/lib/postgresql/data"]
STOPSIGNAL SIGINT
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["postgres"]

FROM ${BASE} AS redis
USER redis
WORKDIR /var/lib/redis
CMD ["redis-server"]

FROM ${BASE} AS nginx
RUN rm -f /etc/nginx/sites-enabled/default \
    && ln -sf /dev/stdout /var/log/nginx/access.log \
    && ln -sf /dev/stderr /var/log/nginx/error.log
STOPSIGNAL SIGQUIT
CMD ["nginx", "-g", "daemon off;"]
