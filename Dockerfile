# The dtx images, for machines that reach a container registry.
#
#   docker build --target dtx -t dtx .                     # the coordinator
#   docker build --target inventory-service -t dtx-inventory .
#   docker build --target order-service -t dtx-orders .
#   docker run -p 7707:7707 dtx serve --listen 0.0.0.0:7707 --db sqlite:/var/lib/dtx/dtx.db
#
# This project's own machines reach no registry, so its tests and the
# fault-injection harness do not use this file: tests/images/build-images.sh
# makes the same Debian bookworm runtime from Debian packages and the
# harness copies the binaries cargo built into it.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked \
        -p dtx-coordinator --bin dtx \
        -p inventory-service --bin inventory-service \
        -p order-service --bin order-service

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home /var/lib/dtx --create-home dtx
USER dtx
WORKDIR /var/lib/dtx

FROM runtime AS inventory-service
COPY --from=build /src/target/release/inventory-service /usr/local/bin/
EXPOSE 7710
ENTRYPOINT ["inventory-service", "--listen", "0.0.0.0:7710"]

FROM runtime AS order-service
COPY --from=build /src/target/release/order-service /usr/local/bin/
EXPOSE 7711
ENTRYPOINT ["order-service", "--listen", "0.0.0.0:7711"]

# Last, so that a plain `docker build .` makes the coordinator.
FROM runtime AS dtx
COPY --from=build /src/target/release/dtx /usr/local/bin/
EXPOSE 7707
ENTRYPOINT ["dtx"]
CMD ["serve", "--listen", "0.0.0.0:7707", "--db", "sqlite:/var/lib/dtx/dtx.db"]
