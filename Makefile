# Shortcuts; the scripts are the source of truth (CI runs ./scripts/test too).
# Pass pytest arguments with ARGS, e.g. `make test ARGS="-k embedded"`; `make up ARGS="--size 20Gi"`.
.PHONY: check test up proto bench

check:
	./scripts/check

test:
	./scripts/test $(ARGS)

up:
	./scripts/up $(ARGS)

proto:
	./scripts/gen-proto

bench:
	./scripts/bench $(ARGS)
