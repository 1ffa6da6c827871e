# tlsgate build and test targets. See README.md.
GO      ?= go
PREFIX  ?= /usr/local
DESTDIR ?=
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
# The binary `build` writes and `install` installs, and extra go build and
# linker flags for it (make deb: a stripped position-independent binary).
BIN     ?= tlsgate
GOBUILDFLAGS ?=
GOLDFLAGS    ?=
# Where `make install` puts things. systemd and systemd-tmpfiles search
# /usr/local/lib as well as /usr/lib, so the defaults need no copies in /etc.
SBINDIR     ?= $(PREFIX)/sbin
MANDIR      ?= $(PREFIX)/share/man
DOCDIR      ?= $(PREFIX)/share/doc/tlsgate
DATADIR     ?= $(PREFIX)/share/tlsgate
UNITDIR     ?= $(PREFIX)/lib/systemd/system
TMPFILESDIR ?= $(PREFIX)/lib/tmpfiles.d
# The Debian package (make deb): version, architecture, output directory.
DEB_VERSION    ?= $(shell sh deploy/debian/version.sh)
DEB_ARCH       ?= amd64
DEB_OUT        ?= .
DEB_MAINTAINER ?= tlsgate maintainers <tlsgate@users.noreply.github.com>
DEB_STAGE      ?= build/deb
FUZZTIME ?= 10s
# Packages with fuzz targets and their targets, for `make fuzz`.
FUZZ_TARGETS = \
	./internal/policy:FuzzParse \
	./internal/certid:FuzzParseDN \
	./internal/policy:FuzzNeverWeaker \
	./policyd:FuzzReadNetstring \
	./policyd:FuzzParseDelegation \
	./internal/certid:FuzzDecodeXtext \
	./internal/certid:FuzzPrintable \
	./milter:FuzzStampHeaders \
	./milter:FuzzMilterSession \
	./milter:FuzzForgedAuthResults \
	./internal/discovery/mtasts:FuzzParsePolicy \
	./internal/discovery/mtasts:FuzzParseRecord \
	./internal/maillog:FuzzParse \
	./internal/control:FuzzControl \
	./certs:FuzzParseFingerprint \
	./internal/mtaconf:FuzzSplitList \
	./internal/mtaconf:FuzzApplySendmail \
	./internal/heldmail:FuzzClassify

.PHONY: all gocheck build test unit deps vet fmtcheck fmt fuzz fuzz-long bench bench-micro demo install deb lintian man clean

all: build

# Debian 12 ships Go 1.19, which cannot even read go.mod: say what to do.
gocheck:
	@command -v $(GO) >/dev/null || { echo "make: no Go found; Go 1.26 or newer is needed (README.md, Quick start)" >&2; exit 1; }
	@$(GO) version | awk '{ v = $$3; sub(/^go/, "", v); split(v, a, "."); \
		if (a[1] + 0 < 1 || (a[1] + 0 == 1 && a[2] + 0 < 26)) { \
		print "make: " $$0 " is too old; Go 1.26 or newer is needed (README.md, Quick start)" > "/dev/stderr"; exit 1 } }'

build: gocheck
	$(GO) build -trimpath $(GOBUILDFLAGS) -ldflags "-X main.version=$(VERSION) $(GOLDFLAGS)" -o $(BIN) ./cmd/tlsgate

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

# The binary, the man pages, the unit, the tmpfiles.d files and the
# examples. The unit's ExecStart is rewritten to SBINDIR. The Postfix
# tmpfiles.d file goes to DATADIR, not TMPFILESDIR: README.md "Install on
# Debian" links it into /etc/tmpfiles.d on Postfix hosts only.
install: build
	install -D -m 0755 $(BIN) $(DESTDIR)$(SBINDIR)/tlsgate
	install -D -m 0644 deploy/man/tlsgate.8 $(DESTDIR)$(MANDIR)/man8/tlsgate.8
	install -D -m 0644 deploy/man/tlsgate.toml.5 $(DESTDIR)$(MANDIR)/man5/tlsgate.toml.5
	install -d $(DESTDIR)$(UNITDIR)
	sed 's|^ExecStart=/usr/sbin/tlsgate |ExecStart=$(SBINDIR)/tlsgate |' deploy/systemd/tlsgate.service >$(DESTDIR)$(UNITDIR)/tlsgate.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/tlsgate.service
	install -D -m 0644 deploy/systemd/tlsgate.tmpfiles $(DESTDIR)$(TMPFILESDIR)/tlsgate.conf
	install -D -m 0644 deploy/systemd/tlsgate-postfix.tmpfiles $(DESTDIR)$(DATADIR)/tmpfiles.d/tlsgate-postfix.conf
	install -D -m 0644 deploy/tlsgate.example.toml $(DESTDIR)$(DOCDIR)/examples/tlsgate.example.toml
	install -D -m 0644 deploy/tlsgate.sendmail.example.toml $(DESTDIR)$(DOCDIR)/examples/tlsgate.sendmail.example.toml
	install -D -m 0644 deploy/postfix/main.cf.example $(DESTDIR)$(DOCDIR)/examples/main.cf.example
	install -D -m 0644 deploy/sendmail/tlsgate.mc.example $(DESTDIR)$(DOCDIR)/examples/tlsgate.mc.example
	install -D -m 0644 deploy/prometheus/tlsgate.rules.yml $(DESTDIR)$(DOCDIR)/examples/tlsgate.rules.yml

# The Debian package DEB_OUT/tlsgate_DEB_VERSION_DEB_ARCH.deb: `make install`
# into a staging tree with Debian's paths (a stripped PIE without cgo: it
# needs the dynamic loader for its relocations but no shared library),
# Debian's compressed man pages and changelog, the
# copyright file generated from the binary's modules, then nfpm (pinned in
# go.mod as a tool) with deploy/debian/nfpm.yaml and the maintainer scripts.
deb: gocheck
	rm -rf $(DEB_STAGE)
	mkdir -p $(DEB_STAGE)
	$(MAKE) --no-print-directory install CGO_ENABLED=0 GOOS=linux GOARCH=$(DEB_ARCH) VERSION=$(DEB_VERSION) \
		GOBUILDFLAGS=-buildmode=pie GOLDFLAGS="-s -w" \
		BIN=$(abspath $(DEB_STAGE))/tlsgate DESTDIR=$(abspath $(DEB_STAGE))/root PREFIX=/usr UNITDIR=/lib/systemd/system
	gzip -9n $(DEB_STAGE)/root/usr/share/man/man8/tlsgate.8 $(DEB_STAGE)/root/usr/share/man/man5/tlsgate.toml.5
	GO=$(GO) sh deploy/debian/copyright.sh $(DEB_STAGE)/tlsgate >$(DEB_STAGE)/root/usr/share/doc/tlsgate/copyright
	DEB_MAINTAINER="$(DEB_MAINTAINER)" sh deploy/debian/changelog.sh $(DEB_VERSION) | gzip -9n >$(DEB_STAGE)/root/usr/share/doc/tlsgate/changelog.gz
	install -D -m 0644 deploy/debian/lintian-overrides $(DEB_STAGE)/root/usr/share/lintian/overrides/tlsgate
	mkdir -p $(DEB_OUT)
	epoch=$$(git log -1 --format=%ct 2>/dev/null || date +%s) && \
	find $(DEB_STAGE)/root -exec touch -h -d @$$epoch {} + && \
	DEB_VERSION=$(DEB_VERSION) DEB_ARCH=$(DEB_ARCH) DEB_STAGE=$(DEB_STAGE) DEB_MAINTAINER="$(DEB_MAINTAINER)" \
	SOURCE_DATE_EPOCH=$$epoch \
		$(GO) tool nfpm package --config deploy/debian/nfpm.yaml --packager deb \
		--target $(DEB_OUT)/tlsgate_$(DEB_VERSION)_$(DEB_ARCH).deb

# Lintian on the package (README.md lists the tags it reports and why).
lintian: deb
	lintian --pedantic --display-info --fail-on error,warning $(DEB_OUT)/tlsgate_$(DEB_VERSION)_$(DEB_ARCH).deb

# Regenerate the man pages from deploy/man/*.md.
man:
	$(GO) test ./internal/mangen -update

clean:
	rm -rf tlsgate build
