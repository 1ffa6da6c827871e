# tlsgate build and test targets. See README.md.
GO      ?= go
PREFIX  ?= /usr/local
DESTDIR ?=
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
FUZZTIME ?= 10s
# Packages with fuzz targets and their targets, for `make fuzz`.
FUZZ_TARGETS = \
	./internal/policy:FuzzParse \
	./internal/certid:FuzzParseDN \
	./policyd:FuzzReadNetstring \
	./policyd:FuzzParseDelegation \
	./internal/certid:FuzzDecodeXtext \
	./internal/certid:FuzzPrintable \
	./milter:FuzzStampHeaders \
	./milter:FuzzMilterSession \
	./internal/discovery/mtasts:FuzzParsePolicy \
	./internal/discovery/mtasts:FuzzParseRecord

.PHONY: all gocheck build test unit deps vet fmtcheck fmt fuzz fuzz-long bench bench-micro demo install man clean

all: build

# Debian 12 ships Go 1.19, which cannot even read go.mod: say what to do.
gocheck:
	@command -v $(GO) >/dev/null || { echo "make: no Go found; Go 1.26 or newer is needed (README.md, Quick start)" >&2; exit 1; }
	@$(GO) version | awk '{ v = $$3; sub(/^go/, "", v); split(v, a, "."); \
		if (a[1] + 0 < 1 || (a[1] + 0 == 1 && a[2] + 0 < 26)) { \
		print "make: " $$0 " is too old; Go 1.26 or newer is needed (README.md, Quick start)" > "/dev/stderr"; exit 1 } }'

build: gocheck
	$(GO) build -trimpath -ldflags "-X main.version=$(VERSION)" -o tlsgate ./cmd/tlsgate

# Every test: installs what the real-MTA tests need (root, Debian 12), then
# vet, format check, the whole suite with the race detector, and a short
# run of every fuzz target. This is README's test command and what CI runs.
test: gocheck deps vet fmtcheck unit fuzz

unit:
	CI=$${CI:-true} $(GO) test -race -count=1 -timeout 25m ./...

deps:
	bash scripts/install-test-deps.sh

vet:
	$(GO) vet ./...

fmtcheck:
	@out=$$(gofmt -l . 2>/dev/null); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

fmt:
	gofmt -w .

fuzz:
	GO=$(GO) bash scripts/fuzz.sh $(FUZZTIME) $(FUZZ_TARGETS)

fuzz-long:
	$(MAKE) fuzz FUZZTIME=5m

# The side-by-side benchmark (docs/benchmarks.md): tlsgate next to no-op
# servers and Postfix alone, in interleaved rounds; rewrites the generated
# part of docs/benchmarks.md and docs/benchmarks.csv. Part 4 (Postfix end to
# end) needs root and the test deps (make deps); without them it is skipped.
# Extra runner flags: make bench BENCHFLAGS="-parts 12 -rounds 3".
BENCHFLAGS ?=
bench:
	@d=$$(mktemp -d /tmp/tlsgate-bench-bin.XXXXXX) && trap 'rm -rf "$$d"' EXIT && \
	$(GO) build -trimpath -ldflags "-X main.version=$(VERSION)" -o "$$d/tlsgate" ./cmd/tlsgate && \
	$(GO) build -trimpath -o "$$d/tlsgate-bench" ./cmd/tlsgate-bench && \
	"$$d/tlsgate-bench" run -tlsgate "$$d/tlsgate" -out docs/benchmarks.md $(BENCHFLAGS)

# The packages' go test micro-benchmarks (policyd, milter, ...).
bench-micro:
	$(GO) test -run '^$$' -bench . -benchtime 2s ./...

demo: build
	bash scripts/demo.sh

install: build
	install -D -m 0755 tlsgate $(DESTDIR)$(PREFIX)/sbin/tlsgate
	install -D -m 0644 deploy/tlsgate.example.toml $(DESTDIR)$(PREFIX)/share/doc/tlsgate/tlsgate.example.toml
	install -D -m 0644 deploy/tlsgate.sendmail.example.toml $(DESTDIR)$(PREFIX)/share/doc/tlsgate/tlsgate.sendmail.example.toml
	install -D -m 0644 deploy/man/tlsgate.8 $(DESTDIR)$(PREFIX)/share/man/man8/tlsgate.8
	install -D -m 0644 deploy/man/tlsgate.toml.5 $(DESTDIR)$(PREFIX)/share/man/man5/tlsgate.toml.5
	install -D -m 0644 deploy/systemd/tlsgate.service $(DESTDIR)$(PREFIX)/lib/systemd/system/tlsgate.service
	install -D -m 0644 deploy/systemd/tlsgate.tmpfiles $(DESTDIR)$(PREFIX)/lib/tmpfiles.d/tlsgate.conf

# Regenerate the man pages from deploy/man/*.md.
man:
	$(GO) test ./internal/mangen -update

clean:
	rm -f tlsgate
