-- What balancewatch bead691 created (SCHEMA_VERSION 3), postgresql.

CREATE TABLE account (
	id VARCHAR(64) NOT NULL, 
	name VARCHAR(200) NOT NULL, 
	owner_email VARCHAR(320) NOT NULL, 
	billing VARCHAR(16) NOT NULL, 
	timezone VARCHAR(64), 
	locale VARCHAR(32), 
	labels JSON NOT NULL, 
	parent_id VARCHAR(64), 
	enabled BOOLEAN NOT NULL, 
	created_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	PRIMARY KEY (id), 
	FOREIGN KEY(parent_id) REFERENCES account (id)
);

CREATE INDEX ix_account_parent_id ON account (parent_id);

CREATE TABLE alert_state (
	rule_id VARCHAR(64) NOT NULL, 
	account_id VARCHAR(64) NOT NULL, 
	currency VARCHAR(3) NOT NULL, 
	step BIGINT NOT NULL, 
	status VARCHAR(8) NOT NULL, 
	episode INTEGER NOT NULL, 
	reminders_sent INTEGER NOT NULL, 
	fired_at TIMESTAMP WITH TIME ZONE, 
	last_sent_at TIMESTAMP WITH TIME ZONE, 
	next_reminder_at TIMESTAMP WITH TIME ZONE, 
	rearmed_at TIMESTAMP WITH TIME ZONE, 
	PRIMARY KEY (rule_id, account_id, currency, step)
);

CREATE INDEX ix_alert_state_probe ON alert_state (rule_id, account_id, currency, step, status);

CREATE INDEX ix_alert_state_reminder ON alert_state (next_reminder_at);

CREATE TABLE balancewatch_meta (
	name VARCHAR(64) NOT NULL, 
	value VARCHAR(400) NOT NULL, 
	updated_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	PRIMARY KEY (name)
);

CREATE TABLE instance_status (
	instance VARCHAR(128) NOT NULL, 
	started_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	heartbeat_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	live_digest VARCHAR(64) NOT NULL, 
	live_rules INTEGER NOT NULL, 
	live_loaded_at TIMESTAMP WITH TIME ZONE, 
	rule_files JSON NOT NULL, 
	reload_attempted_at TIMESTAMP WITH TIME ZONE, 
	reload_ok BOOLEAN, 
	reload_reason VARCHAR(400) NOT NULL, 
	reload_error TEXT, 
	reloads INTEGER NOT NULL, 
	PRIMARY KEY (instance)
);

CREATE TABLE outbox (
	id BIGSERIAL NOT NULL, 
	idem_key VARCHAR(255) NOT NULL, 
	message_id VARCHAR(255) NOT NULL, 
	kind VARCHAR(16) NOT NULL, 
	rule_id VARCHAR(64), 
	account_id VARCHAR(64), 
	currency VARCHAR(3), 
	step BIGINT, 
	sender VARCHAR(400) NOT NULL, 
	recipients JSON NOT NULL, 
	subject TEXT NOT NULL, 
	text TEXT NOT NULL, 
	html TEXT, 
	attachments JSON DEFAULT '[]' NOT NULL, 
	status VARCHAR(8) NOT NULL, 
	attempts INTEGER NOT NULL, 
	next_attempt_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	lease_until TIMESTAMP WITH TIME ZONE, 
	claimed_by VARCHAR(128), 
	last_error TEXT, 
	created_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	sent_at TIMESTAMP WITH TIME ZONE, 
	PRIMARY KEY (id), 
	UNIQUE (idem_key)
);

CREATE INDEX ix_outbox_account_id ON outbox (account_id);

CREATE INDEX ix_outbox_due ON outbox (status, next_attempt_at);

CREATE TABLE report_cursor (
	report_id VARCHAR(64) NOT NULL, 
	timezone VARCHAR(64) NOT NULL, 
	processed_until TIMESTAMP WITH TIME ZONE NOT NULL, 
	pending_fire TIMESTAMP WITH TIME ZONE, 
	created_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	updated_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	PRIMARY KEY (report_id, timezone)
);

CREATE TABLE report_run (
	id BIGSERIAL NOT NULL, 
	report_id VARCHAR(64) NOT NULL, 
	account_id VARCHAR(64) NOT NULL, 
	period_key VARCHAR(32) NOT NULL, 
	timezone VARCHAR(64) NOT NULL, 
	fire_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	status VARCHAR(8) NOT NULL, 
	claimed_by VARCHAR(128) NOT NULL, 
	lease_until TIMESTAMP WITH TIME ZONE, 
	attempts INTEGER NOT NULL, 
	idem_key VARCHAR(255), 
	note TEXT, 
	claimed_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	finished_at TIMESTAMP WITH TIME ZONE, 
	PRIMARY KEY (id), 
	CONSTRAINT uq_report_run UNIQUE (report_id, account_id, period_key)
);

CREATE INDEX ix_report_run_open ON report_run (report_id, period_key, status);

CREATE TABLE topup_request (
	id BIGSERIAL NOT NULL, 
	idem_key VARCHAR(255) NOT NULL, 
	rule_id VARCHAR(64) NOT NULL, 
	account_id VARCHAR(64) NOT NULL, 
	currency VARCHAR(3) NOT NULL, 
	amount BIGINT NOT NULL, 
	status VARCHAR(12) NOT NULL, 
	attempts INTEGER NOT NULL, 
	next_attempt_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	last_error TEXT, 
	hook_response TEXT, 
	created_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	updated_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (idem_key)
);

CREATE INDEX ix_topup_open ON topup_request (account_id, currency, status);

CREATE TABLE usage_summary (
	account_id VARCHAR(64) NOT NULL, 
	currency VARCHAR(3) NOT NULL, 
	window_days INTEGER NOT NULL, 
	usage_total BIGINT NOT NULL, 
	first_at TIMESTAMP WITH TIME ZONE, 
	days_counted FLOAT NOT NULL, 
	adu BIGINT, 
	status VARCHAR(16) NOT NULL, 
	computed_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	PRIMARY KEY (account_id, currency, window_days)
);

CREATE TABLE balance (
	account_id VARCHAR(64) NOT NULL, 
	currency VARCHAR(3) NOT NULL, 
	amount BIGINT NOT NULL, 
	updated_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	PRIMARY KEY (account_id, currency), 
	FOREIGN KEY(account_id) REFERENCES account (id)
);

CREATE INDEX ix_balance_currency_amount_account ON balance (currency, amount, account_id);

CREATE INDEX ix_balance_updated_at ON balance (updated_at);

CREATE TABLE ledger_entry (
	id BIGSERIAL NOT NULL, 
	account_id VARCHAR(64) NOT NULL, 
	currency VARCHAR(3) NOT NULL, 
	amount BIGINT NOT NULL, 
	kind VARCHAR(16) NOT NULL, 
	service VARCHAR(32), 
	quantity BIGINT, 
	occurred_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	reference VARCHAR(128), 
	balance_after BIGINT, 
	PRIMARY KEY (id), 
	CONSTRAINT uq_ledger_reference UNIQUE (account_id, reference), 
	FOREIGN KEY(account_id) REFERENCES account (id)
);

CREATE INDEX ix_ledger_account_time ON ledger_entry (account_id, currency, occurred_at);

CREATE TABLE owner_preference (
	account_id VARCHAR(64) NOT NULL, 
	currency VARCHAR(3) NOT NULL, 
	threshold_1 BIGINT, 
	threshold_2 BIGINT, 
	threshold_3 BIGINT, 
	recipients JSON NOT NULL, 
	remind BOOLEAN NOT NULL, 
	enabled BOOLEAN NOT NULL, 
	updated_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	PRIMARY KEY (account_id, currency), 
	FOREIGN KEY(account_id) REFERENCES account (id)
);

INSERT INTO balancewatch_meta (name, value, updated_at) VALUES ('schema_version', '3', CURRENT_TIMESTAMP);
