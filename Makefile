# Shortcuts for developers; each target runs a script in scripts/ (which CI runs too).
.PHONY: setup demo test lint fmt openapi bench ci

setup:
	scripts/setup.sh

demo:
	cargo run --release -- demo

test:
	scripts/test.sh

lint:
	scripts/lint.sh

fmt:
	cargo fmt --all

# Regenerate the checked-in OpenAPI document and event JSON Schemas after an API change.
openapi:
	UPDATE_OPENAPI=1 cargo test -p tally-server --test api checked_in_openapi_document_matches_the_code
	UPDATE_OPENAPI=1 cargo test -p tally-inventory --lib checked_in_schemas_match_the_code

bench:
	cargo run --release -- bench inventory
	cargo run --release -- bench fraud

ci: lint test
