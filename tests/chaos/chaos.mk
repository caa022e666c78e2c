# chaos.mk -- `make chaos`: the chaos suite (tests/chaos/chaos.py, see
# docs/chaos.md). Not part of `make test`: it takes minutes.
#   make chaos                    every scenario
#   make chaos CHAOS=kill9        one (or several: CHAOS=kill9,hang)
#   make chaos CHAOS_RATE=300     orders produced per second (default 150)
CHAOS      ?=
CHAOS_RATE ?=

chaos: all kafka-jars
	$(PYTHON) tests/chaos/chaos.py $(if $(CHAOS),--only $(CHAOS)) \
	    $(if $(CHAOS_RATE),--rate $(CHAOS_RATE))

.PHONY: chaos
