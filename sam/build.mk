# Shared by the makefiles `sam build` runs (Metadata: BuildMethod: makefile).
#
# SAM copies a function's CodeUri directory to a scratch directory and runs
#   make --makefile <CodeUri>/Makefile build-<LogicalId>
# there, with ARTIFACTS_DIR set to the directory it zips. So every path here
# comes from this file's own location, never from the working directory.
# The same targets work by hand:
#   make -f sam/broker/Makefile build-BrokerFunction ARTIFACTS_DIR=/tmp/broker

SAM_DIR := $(patsubst %/,%,$(dir $(abspath $(lastword $(MAKEFILE_LIST)))))
ROOT    ?= $(abspath $(SAM_DIR)/..)
GO      ?= go

ifeq ($(wildcard $(ROOT)/go.mod),)
$(error $(ROOT)/go.mod not found: set ROOT to the ephemera checkout)
endif

# Absolute, because the recipes cd to $(ROOT).
OUT = $(abspath $(or $(ARTIFACTS_DIR),$(error ARTIFACTS_DIR is not set (sam build sets it))))

# The functions run on provided.al2023, arm64 (template.yaml Globals).
LAMBDA_BUILD = cd "$(ROOT)" && CGO_ENABLED=0 GOOS=linux GOARCH=arm64 \
	$(GO) build -tags lambda.norpc -trimpath -buildvcs=false -ldflags='-s -w'

# The RDS certificate authorities, for sslmode verify-full (PGSSLROOTCERT).
# The build never downloads them: it copies the bundle committed in
# sam/certs/ (refresh it with `make -C sam/certs refresh`, see
# sam/certs/README.md). RDS_CA_FILE (an absolute path) overrides it.
RDS_CA_FILE ?= $(SAM_DIR)/certs/rds-global-bundle.pem
define rds-ca
	@test -f "$(RDS_CA_FILE)" || { echo "$(RDS_CA_FILE) is missing: run 'make -C $(SAM_DIR)/certs refresh' (see sam/certs/README.md) and commit it, or set RDS_CA_FILE" >&2; exit 1; }
	grep -q 'BEGIN CERTIFICATE' "$(RDS_CA_FILE)" || { echo "$(RDS_CA_FILE): not a PEM certificate bundle" >&2; exit 1; }
	cp "$(RDS_CA_FILE)" "$(1)"
endef

# The start of every function's package: the directory, with the RDS CA bundle
# as rds-ca.pem.
define package
	mkdir -p "$(OUT)"
	$(call rds-ca,$(OUT)/rds-ca.pem)
endef

# A program that reads the broker's configuration: $(1), the Go package, built as
# function behind sam/rendercfg (bootstrap), which renders ephemera.yaml (the
# configuration template) and then execs it.
define configured-function
	$(package)
	$(LAMBDA_BUILD) -o "$(OUT)/function" $(1)
	$(LAMBDA_BUILD) -o "$(OUT)/bootstrap" ./sam/rendercfg
	cp "$(SAM_DIR)/broker/ephemera.yaml" "$(OUT)/ephemera.yaml"
endef
