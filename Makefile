# Kartu. `make run` and `make test` do all the set-up a fresh machine needs.
DATA_DIR ?= .kartu
DATABASE_URL ?= sqlite://$(DATA_DIR)/kartu.db
CARGO ?= cargo

.PHONY: run test check bench profile soak demo setup setup-build fmt clippy fuzz screenshots deb

# What building needs (all `make run` installs), and what the tests add.
setup-build:
	@scripts/setup-build.sh

setup:
	@scripts/setup.sh

# The server on embedded SQLite with a small demo city: init on the first run (the first
# operator token goes to $(DATA_DIR)/operator.token, 0600), then serve in the foreground.
LISTEN ?= 127.0.0.1:8080
run: setup-build
	$(CARGO) build --release -p kartu
	@if [ ! -f $(DATA_DIR)/kartu.toml ]; then \
		mkdir -p $(DATA_DIR) && umask 077 && ./target/release/kartu init --data-dir $(DATA_DIR) > $(DATA_DIR)/operator.token; \
	fi
	./target/release/kartu serve --data-dir $(DATA_DIR) --listen $(LISTEN) --demo-city $(DATA_DIR)/operator.token

# A scripted city day through a private pcscd, the vpcd driver, virtual cards and a kartu
# server; prints the story. Needs root (private namespaces). Extra flags: DEMO_ARGS, e.g.
# make demo DEMO_ARGS="--data-dir /tmp/city --json /tmp/day.json".
DEMO_ARGS ?=
demo: setup
	$(CARGO) run -p kartu -- demo $(DEMO_ARGS)

# The citizens' and the public's pages in a phone-sized viewport (headless chromium, a
# throwaway installation with the demo city) into docs/screenshots/, shown in the README.
screenshots: setup
	$(CARGO) build --release -p kartu
	scripts/screenshots.sh target/release/kartu

# The server's Debian package, target/deb/kartu_<version>_<arch>.deb: the release binary
# without the pcsc feature (no card readers, no libpcsclite), kartu.service (hardened, as the
# kartu system user on /var/lib/kartu) and /etc/kartu/kartu.env; see scripts/deb.sh.
# scripts/deb-test.sh installs it, serves, pays once and removes it (root; CI runs it).
# It leaves the server build in target/release/kartu; the next `cargo build --release -p
# kartu` (make run, bench, screenshots) puts the default one back.
deb: setup-build
	$(CARGO) build --release -p kartu --no-default-features
	scripts/deb.sh target/release/kartu

# Every test, on SQLite and PostgreSQL (a throwaway cluster is started if none runs).
test: setup
	@scripts/need-root.sh
	scripts/with-postgres.sh $(CARGO) test --workspace

fmt:
	$(CARGO) fmt --all --check

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

check: setup fmt clippy test

# The benchmark report: bench-report/report.txt and report.csv (and http.txt,
# http_latency.png). The HTTP part serves the release `kartu` binary built here.
# Extra flags: make bench BENCH_ARGS="--only http --http-seconds 20".
# One build of both binaries, then the bench binary run directly: `cargo run -p
# kartu-bench` alone would resolve other features and rebuild the workspace.
BENCH_ARGS ?=
bench: setup
	$(CARGO) build --release -p kartu -p kartu-bench
	scripts/with-postgres.sh ./target/release/kartu-bench --out bench-report $(BENCH_ARGS)

# Flame graphs of the write path: each ledger and HTTP part of the bench under perf over the
# whole machine, drawn with inferno: bench-report/flame-<part>.svg and profile-<part>.txt.
# Needs root (system-wide perf). PROFILE_SECONDS sets each part's measured seconds.
profile: setup
	$(CARGO) build --release -p kartu -p kartu-bench
	scripts/with-postgres.sh scripts/profile.sh

# The crash, restart and two-process tests (crates/kartu/tests/crash.rs) with long load:
# SOAK_SECONDS of payments per scenario, a crash every few seconds. `make test` runs the
# same tests with a few seconds each. Needs root (the disk-full test mounts a tmpfs).
SOAK_SECONDS ?= 120
soak: setup
	KARTU_SOAK_SECONDS=$(SOAK_SECONDS) scripts/with-postgres.sh $(CARGO) test -p kartu --test crash -- --nocapture --test-threads 1

# Each fuzz target (fuzz/, cargo fuzz on nightly) for FUZZ_SECONDS, from the committed seeds;
# what it finds lands in fuzz/artifacts/<target>/. The seeds themselves run in `make test`
# (crates/fuzz-checks). Example: make fuzz FUZZ_SECONDS=600 FUZZ_TARGETS=request_body
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= apdu sun amount request_body
fuzz: setup
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	@for t in $(FUZZ_TARGETS); do \
		mkdir -p target/fuzz-corpus/$$t || exit 1; \
		$(CARGO) +nightly fuzz run --sanitizer none $$t target/fuzz-corpus/$$t fuzz/corpus/$$t -- \
			-max_total_time=$(FUZZ_SECONDS) -timeout=10 || exit 1; \
	done
