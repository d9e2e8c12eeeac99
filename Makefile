# The two commands a new user needs: `make run` and `make test`. Both install what is
# missing (scripts/deps.sh), configure and build. `make sanitize` runs the tests under
# AddressSanitizer + UndefinedBehaviorSanitizer.

BUILD      ?= build
SAN_BUILD  ?= build-sanitize
MESON_OPTS ?= --werror
RULES      ?= rules/onboarding.rules
DEMO_USERS ?= 2000

.PHONY: all deps build run demo test sanitize bench bench-ingest clean

all: build

deps:
	@scripts/deps.sh

$(BUILD)/build.ninja: | deps
	meson setup $(BUILD) $(MESON_OPTS)

build: deps $(BUILD)/build.ninja
	ninja -C $(BUILD)

# The main job: `onramp serve` on its embedded defaults (ingest and API on 127.0.0.1:8088,
# data in ./var/onramp, the default rules). It prints the write key, the admin token and the
# API URL at start; Ctrl-C stops it (the engine checkpoints first). ONRAMP_* variables and
# SERVE_OPTS change the defaults (onramp serve --help).
SERVE_OPTS ?=
run: build
	@echo "onramp: starting the server (by default on http://127.0.0.1:8088); its \"listening\" and \"api\" log lines give the URLs it serves, docs/api.md the endpoints"
	$(BUILD)/onramp serve --rules $(RULES) $(SERVE_OPTS)

# A generated day of onboarding replayed through the default rules, with the segment summary.
demo: build
	$(BUILD)/onramp simulate --users $(DEMO_USERS) --seed 1 > $(BUILD)/demo.jsonl
	$(BUILD)/onramp replay --rules $(RULES) --summary --stats $(BUILD)/demo.jsonl > $(BUILD)/demo.out
	@echo "fires and segment changes: $(BUILD)/demo.out"

test: build
	@scripts/test.sh $(BUILD)

$(SAN_BUILD)/build.ninja: | deps
	meson setup $(SAN_BUILD) $(MESON_OPTS) -Db_sanitize=address,undefined -Db_lundef=false \
		-Dbuildtype=debug

sanitize: deps $(SAN_BUILD)/build.ninja
	ninja -C $(SAN_BUILD)
	@UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 ASAN_OPTIONS=detect_leaks=1 \
		scripts/test.sh $(SAN_BUILD)

bench: build
	bench/run.sh $(BUILD)
	bench/ingest.sh $(BUILD)
	node bench/fire_latency.mjs $(BUILD)/onramp 500 5

# onramp serve against nginx on this machine: peak rates, ratios, latency at 70% of peak;
# then event-to-fire latency.
bench-ingest: build
	bench/ingest.sh $(BUILD)
	node bench/fire_latency.mjs $(BUILD)/onramp 500 5

clean:
	rm -rf $(BUILD) $(SAN_BUILD)
