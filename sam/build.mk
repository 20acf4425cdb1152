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
# Offline, point RDS_CA_FILE at a copy (an absolute path).
RDS_CA_URL  ?= https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem
RDS_CA_FILE ?=
define rds-ca
	$(if $(RDS_CA_FILE),cp "$(RDS_CA_FILE)" "$(1)",curl -fsSL --proto '=https' --tlsv1.2 -o "$(1)" "$(RDS_CA_URL)")
	grep -q 'BEGIN CERTIFICATE' "$(1)" || { echo "$(1): not a PEM certificate bundle" >&2; exit 1; }
endef
