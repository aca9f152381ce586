# The two commands: `make demo` (set up and start Dagster on 127.0.0.1:3000) and `make test`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
export DAGSTER_HOME := $(CURDIR)/.dagster_home
export RUNTIME__DLTHUB_TELEMETRY := false

.PHONY: demo test install services demo-data lint kinesis-mock s3rver

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip uv
	# Bytecode compiled once here: environments that set PYTHONDONTWRITEBYTECODE (most
	# container images) otherwise recompile dagster and dlt in every run process (~2.3 s each).
	$(VENV)/bin/uv pip install --quiet --compile-bytecode --python $(PY) -e '.[dev]'
	touch $@

# Create the instance's storage once, before runs started together race to create it, and
# migrate it again only when the installed Dagster changed: migrating on every start took
# 17.7 s with 196 past runs, and grows with history.
SCHEMA := $(DAGSTER_HOME)/.schema-migrated
$(SCHEMA): $(VENV)/.installed
	mkdir -p $(DAGSTER_HOME)
	ln -sf ../dagster.yaml $(DAGSTER_HOME)/dagster.yaml
	$(VENV)/bin/dagster instance migrate >/dev/null
	touch $@

install: $(SCHEMA)
	mkdir -p data
	@test -f $(DAGSTER_HOME)/history/runs.db || $(VENV)/bin/dagster instance migrate >/dev/null

demo-data: install
	$(PY) -m ingestion_platform.demo.shop --path data/demo/shop.sqlite

# kinesis-mock (npm `kinesis-local`) for the Kinesis resharding tests, in a project folder.
KINESIS_MOCK := .kinesis-mock/node_modules/kinesis-local/main.js
$(KINESIS_MOCK): .kinesis-mock/package.json
	npm install --prefix .kinesis-mock --no-audit --no-fund --silent
	touch $@

kinesis-mock: $(KINESIS_MOCK)

# s3rver, a second S3 implementation beside moto for the S3 file source tests.
S3RVER := .s3rver/node_modules/s3rver/package.json
$(S3RVER): .s3rver/package.json
	npm install --prefix .s3rver --no-audit --no-fund --silent
	touch $@

s3rver: $(S3RVER)

# The modules that prove the landing contract, run again with every warehouse in a DuckLake.
LAKE_CONTRACT := $(addprefix ingestion_platform_tests/,test_ducklake.py test_warehouse.py \
	test_sql_landing_contract.py test_sql_types.py test_sql_failures.py test_concurrent_runs.py \
	test_record_landing.py test_files_local.py test_files_quarantine.py test_kinesis_landing.py)
# The source database does not matter to the warehouse (MariaDB runs in the first pass), and
# the Kinesis window test waits a minute for windows to close, warehouse aside.
LAKE_SKIP := -k "not mariadb" --deselect \
	ingestion_platform_tests/test_kinesis_landing.py::test_a_time_window_lands_exactly_the_records_that_arrived_in_it

# A RabbitMQ plugin's listener on 127.0.0.1:PORT for a running node: set before the plugin
# starts (loaded first, as loading would reset it).
LOOPBACK = 'application:load($(1)), application:set_env($(1), tcp_listeners, [{"127.0.0.1", $(2)}]).'

# Start the local peers the tests use when they are installed but stopped.
services: kinesis-mock s3rver
	@pg_isready -q -h 127.0.0.1 -p 5432 || pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql) main start
	@mariadb-admin -h 127.0.0.1 -u root ping >/dev/null 2>&1 || (start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd && sleep 3)
	@# The brokers of the queue sources: NATS with JetStream and Mosquitto (MQTT), on loopback.
	@(exec 3<>/dev/tcp/127.0.0.1/4222) 2>/dev/null || (start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server && sleep 1)
	@(exec 3<>/dev/tcp/127.0.0.1/1883) 2>/dev/null || (mosquitto -d -c /etc/mosquitto/mosquitto.conf && sleep 1)
	@# RabbitMQ (queues over AMQP on 5672; streams over its stream protocol on 5552, a plugin).
	@# await_startup fails at once until the new node has registered, so it is retried.
	@(exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null || (rabbitmq-server -detached && timeout 90 sh -c 'until rabbitmqctl await_startup --timeout 60 >/dev/null 2>&1; do sleep 1; done')
	@(exec 3<>/dev/tcp/127.0.0.1/5552) 2>/dev/null || (rabbitmqctl eval $(call LOOPBACK,rabbitmq_stream,5552) >/dev/null && rabbitmq-plugins enable rabbitmq_stream >/dev/null)
	@# RabbitMQ's MQTT plugin: the MQTT source's second broker, on 1884 (Mosquitto holds 1883).
	@# advanced.config keeps both plugins on loopback and off 1883 across restarts (an enabled
	@# plugin that cannot bind its port stops RabbitMQ from booting); an existing one is kept.
	@test -e /etc/rabbitmq/advanced.config || printf '%s\n' \
		'[{rabbitmq_mqtt, [{tcp_listeners, [{"127.0.0.1", 1884}]}]},' \
		' {rabbitmq_stream, [{tcp_listeners, [{"127.0.0.1", 5552}]}]}].' > /etc/rabbitmq/advanced.config
	@(exec 3<>/dev/tcp/127.0.0.1/1884) 2>/dev/null || (rabbitmqctl eval $(call LOOPBACK,rabbitmq_mqtt,1884) >/dev/null && rabbitmq-plugins enable rabbitmq_mqtt >/dev/null)
	@# Debian packages the tests start themselves: sshd for the file sources
	@# (ingestion_platform_tests/sshd.py) and chromium for the end-to-end suite.
	@missing=""; \
	test -x /usr/sbin/sshd || missing="$$missing openssh-server"; \
	test -x /usr/bin/chromium || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

# Demo-only credentials for the local music API; real sources read theirs from the environment.
demo: export MUSIC_API_URL := http://127.0.0.1:8765
demo: export MUSIC_API_CLIENT_ID := demo-client
demo: export MUSIC_API_CLIENT_SECRET := demo-secret
demo: export PARTNER_SFTP_USER := $(shell id -un)
demo: export PARTNER_SFTP_KEY := data/demo/sftp/partner_user_key
# moto's server stands in for AWS (Kinesis, S3, Glue); it accepts any credentials.
demo: export CLICKS_KINESIS_ENDPOINT := http://127.0.0.1:4566
demo: export DEMO_S3_ENDPOINT := http://127.0.0.1:4566
demo: export DEMO_GLUE_ENDPOINT := http://127.0.0.1:4566
demo: export AWS_ACCESS_KEY_ID := demo
demo: export AWS_SECRET_ACCESS_KEY := demo
demo: demo-data
	mkdir -p data/inbox
	$(PY) -m ingestion_platform.demo.run --port 3000

test: install services
	$(VENV)/bin/ruff check .
	$(VENV)/bin/dg check yaml
	$(VENV)/bin/dg check defs
	@# The docs site, broken links and anchors failing it. Not --quiet: it hides the
	@# warnings --strict counts, so a broken link would pass (mkdocs 1.6).
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir $(CURDIR)/.site
	$(PY) -m ingestion_platform.check
	$(VENV)/bin/dagster definitions validate -m ingestion_platform.demo.definitions
	@# A smoke check, not a timed test: the start-up benchmark's CLI run still works.
	$(PY) bench/run_startup.py --smoke
	$(VENV)/bin/pytest -n 2 --dist loadfile --durations=15
	INGESTION_TEST_WAREHOUSE=ducklake $(VENV)/bin/pytest -n 2 --dist loadfile --durations=5 $(LAKE_CONTRACT) $(LAKE_SKIP)

lint: install
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .
