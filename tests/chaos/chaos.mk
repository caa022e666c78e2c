# chaos.mk -- the chaos suite (tests/chaos/chaos.py), included by the
# Makefile. Not part of `make test`: it takes minutes. See docs/chaos.md.
#
#   make chaos                 every scenario
#   make chaos CHAOS=kill9     one (or a comma-separated list)

CHAOS ?=

.PHONY: chaos
chaos: all kafka-jars
	$(PYTHON) tests/chaos/chaos.py $(if $(CHAOS),--only $(CHAOS))
