-- What balancewatch ca87c6c created (SCHEMA_VERSION 1), postgresql.

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

CREATE INDEX ix_alert_state_reminder ON alert_state (next_reminder_at);

CREATE TABLE balancewatch_meta (
	name VARCHAR(64) NOT NULL, 
	value VARCHAR(400) NOT NULL, 
	updated_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	PRIMARY KEY (name)
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

CREATE TABLE balance (
	account_id VARCHAR(64) NOT NULL, 
	currency VARCHAR(3) NOT NULL, 
	amount BIGINT NOT NULL, 
	updated_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	PRIMARY KEY (account_id, currency), 
	FOREIGN KEY(account_id) REFERENCES account (id)
);

CREATE INDEX ix_balance_currency_amount ON balance (currency, amount);

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
	thresholds JSON NOT NULL, 
	recipients JSON NOT NULL, 
	remind VARCHAR(16), 
	enabled BOOLEAN NOT NULL, 
	updated_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	PRIMARY KEY (account_id, currency), 
	FOREIGN KEY(account_id) REFERENCES account (id)
);

INSERT INTO balancewatch_meta (name, value, updated_at) VALUES ('schema_version', '1', CURRENT_TIMESTAMP);
