# The developer vocabulary; each target is a script in scripts/ that works on its own.
.PHONY: dev test lint bench demo package-check

dev:
	PEAK_GROUPS=dev bash scripts/setup

test:
	bash scripts/test

lint:
	bash scripts/lint

bench:
	bash scripts/bench

demo:
	bash scripts/demo

package-check:
	bash scripts/package-check
