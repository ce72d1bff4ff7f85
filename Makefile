# Kartu. `make run` and `make test` do all the set-up a fresh machine needs.
DATA_DIR ?= .kartu
DATABASE_URL ?= sqlite://$(DATA_DIR)/kartu.db
CARGO ?= cargo

.PHONY: run test check bench setup fmt clippy

setup:
	@scripts/setup.sh

# The ledger on embedded SQLite: migrate, then show the books.
run: setup
	@mkdir -p $(DATA_DIR)
	$(CARGO) build --release -p kartu
	./target/release/kartu migrate --database-url $(DATABASE_URL)
	./target/release/kartu ledger trial-balance --database-url $(DATABASE_URL)
	@echo "Ledger ready at $(DATABASE_URL). Try: ./target/release/kartu ledger entries --database-url $(DATABASE_URL)"

# Every test, on SQLite and PostgreSQL (a throwaway cluster is started if none runs).
test: setup
	scripts/with-postgres.sh $(CARGO) test --workspace

fmt:
	$(CARGO) fmt --all --check

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

check: setup fmt clippy test

# The benchmark report: bench-report/report.txt and report.csv (and http.txt,
# http_latency.png). The HTTP part serves the release `kartu` binary built here.
# Extra flags: make bench BENCH_ARGS="--only http --http-seconds 20".
BENCH_ARGS ?=
bench: setup
	$(CARGO) build --release -p kartu -p kartu-bench
	scripts/with-postgres.sh $(CARGO) run --release -p kartu-bench -- --out bench-report $(BENCH_ARGS)
