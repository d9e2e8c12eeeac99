# The two commands a new user needs: `make run` and `make test`. Both install what is
# missing (scripts/deps.sh), configure and build. `make sanitize` runs the tests under
# AddressSanitizer + UndefinedBehaviorSanitizer.

BUILD      ?= build
SAN_BUILD  ?= build-sanitize
MESON_OPTS ?= --werror
RULES      ?= rules/onboarding.rules
DEMO_USERS ?= 2000

.PHONY: all deps build run test sanitize bench clean

all: build

deps:
	@scripts/deps.sh

$(BUILD)/build.ninja: | deps
	meson setup $(BUILD) $(MESON_OPTS)

build: deps $(BUILD)/build.ninja
	ninja -C $(BUILD)

# Until the server exists, the main job replays a generated demo day through the default
# rules and prints the segment summary.
run: build
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

clean:
	rm -rf $(BUILD) $(SAN_BUILD)
