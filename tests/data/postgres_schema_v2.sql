-- The Postgres schema baton_nb 0.1.0 created at schema version 2 (before migrations 3 and 4),
-- as pg_dump --schema-only --no-owner --no-privileges printed it (Postgres 15), with the
-- 'public.' qualifiers and psql meta-commands removed so it loads into any schema.
-- Used by tests/integration/test_storage_names.py to check migrations 3 and 4 on real tables.

CREATE TABLE baton_schema_version (
    version integer NOT NULL,
    applied_at timestamp with time zone NOT NULL
);

CREATE SEQUENCE baton_schema_version_version_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;

ALTER SEQUENCE baton_schema_version_version_seq OWNED BY baton_schema_version.version;

CREATE TABLE workflow_completions (
    id integer NOT NULL,
    run_id character varying(64) NOT NULL,
    step character varying(400) NOT NULL,
    call_index integer NOT NULL,
    request_hash character varying(64) NOT NULL,
    response character varying NOT NULL,
    created_at timestamp with time zone NOT NULL
);

CREATE SEQUENCE workflow_completions_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;

ALTER SEQUENCE workflow_completions_id_seq OWNED BY workflow_completions.id;

CREATE TABLE workflow_debug_logs (
    id integer NOT NULL,
    run_id character varying(64) NOT NULL,
    step character varying(400) NOT NULL,
    attempt integer NOT NULL,
    kind character varying(20) NOT NULL,
    message character varying NOT NULL,
    data character varying,
    created_at timestamp with time zone NOT NULL
);

CREATE SEQUENCE workflow_debug_logs_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;

ALTER SEQUENCE workflow_debug_logs_id_seq OWNED BY workflow_debug_logs.id;

CREATE TABLE workflow_nodes (
    id integer NOT NULL,
    run_id character varying(64) NOT NULL,
    step character varying(400) NOT NULL,
    parent character varying(200),
    kind character varying(10) NOT NULL,
    worker character varying(400) NOT NULL,
    deps character varying NOT NULL,
    remaining_deps integer NOT NULL,
    ignore_cancelled boolean NOT NULL,
    ignore_discarded boolean NOT NULL,
    max_attempts integer NOT NULL,
    model character varying(200),
    item_index integer,
    state character varying(12) NOT NULL,
    attempt integer NOT NULL,
    error character varying,
    result character varying,
    has_result boolean NOT NULL,
    started_at timestamp with time zone,
    finished_at timestamp with time zone,
    updated_at timestamp with time zone NOT NULL
);

CREATE SEQUENCE workflow_nodes_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;

ALTER SEQUENCE workflow_nodes_id_seq OWNED BY workflow_nodes.id;

CREATE TABLE workflow_runs (
    id character varying(64) NOT NULL,
    workflow character varying(200) NOT NULL,
    params character varying NOT NULL,
    status character varying(20) NOT NULL,
    created_at timestamp with time zone NOT NULL,
    started_at timestamp with time zone,
    finished_at timestamp with time zone,
    failed_steps character varying NOT NULL,
    executions integer NOT NULL,
    lease_owner character varying(200),
    lease_expires_at timestamp with time zone
);

CREATE TABLE workflow_step_stats (
    id integer NOT NULL,
    run_id character varying(64) NOT NULL,
    step character varying(400) NOT NULL,
    model character varying(200) NOT NULL,
    provider character varying(60) NOT NULL,
    attempt integer NOT NULL,
    call_index integer NOT NULL,
    input_tokens integer NOT NULL,
    cached_input_tokens integer NOT NULL,
    cache_write_tokens integer NOT NULL,
    output_tokens integer NOT NULL,
    reasoning_tokens integer NOT NULL,
    cost_usd numeric(30,12),
    latency_ms double precision NOT NULL,
    replayed boolean NOT NULL,
    estimated boolean NOT NULL,
    created_at timestamp with time zone NOT NULL
);

CREATE SEQUENCE workflow_step_stats_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;

ALTER SEQUENCE workflow_step_stats_id_seq OWNED BY workflow_step_stats.id;

ALTER TABLE ONLY baton_schema_version ALTER COLUMN version SET DEFAULT nextval('baton_schema_version_version_seq'::regclass);

ALTER TABLE ONLY workflow_completions ALTER COLUMN id SET DEFAULT nextval('workflow_completions_id_seq'::regclass);

ALTER TABLE ONLY workflow_debug_logs ALTER COLUMN id SET DEFAULT nextval('workflow_debug_logs_id_seq'::regclass);

ALTER TABLE ONLY workflow_nodes ALTER COLUMN id SET DEFAULT nextval('workflow_nodes_id_seq'::regclass);

ALTER TABLE ONLY workflow_step_stats ALTER COLUMN id SET DEFAULT nextval('workflow_step_stats_id_seq'::regclass);

ALTER TABLE ONLY baton_schema_version
    ADD CONSTRAINT baton_schema_version_pkey PRIMARY KEY (version);

ALTER TABLE ONLY workflow_completions
    ADD CONSTRAINT uq_workflow_completions_call UNIQUE (run_id, step, call_index, request_hash);

ALTER TABLE ONLY workflow_nodes
    ADD CONSTRAINT uq_workflow_nodes_run_step UNIQUE (run_id, step);

ALTER TABLE ONLY workflow_completions
    ADD CONSTRAINT workflow_completions_pkey PRIMARY KEY (id);

ALTER TABLE ONLY workflow_debug_logs
    ADD CONSTRAINT workflow_debug_logs_pkey PRIMARY KEY (id);

ALTER TABLE ONLY workflow_nodes
    ADD CONSTRAINT workflow_nodes_pkey PRIMARY KEY (id);

ALTER TABLE ONLY workflow_runs
    ADD CONSTRAINT workflow_runs_pkey PRIMARY KEY (id);

ALTER TABLE ONLY workflow_step_stats
    ADD CONSTRAINT workflow_step_stats_pkey PRIMARY KEY (id);

CREATE INDEX ix_logs_run_step ON workflow_debug_logs USING btree (run_id, step);

CREATE INDEX ix_runs_status_created ON workflow_runs USING btree (status, created_at);

CREATE INDEX ix_runs_workflow_created ON workflow_runs USING btree (workflow, created_at);

CREATE INDEX ix_stats_run_step_model ON workflow_step_stats USING btree (run_id, step, model);

CREATE INDEX ix_workflow_completions_run_id ON workflow_completions USING btree (run_id);

CREATE INDEX ix_workflow_debug_logs_created_at ON workflow_debug_logs USING btree (created_at);

CREATE INDEX ix_workflow_debug_logs_run_id ON workflow_debug_logs USING btree (run_id);

CREATE INDEX ix_workflow_nodes_run_id ON workflow_nodes USING btree (run_id);

CREATE INDEX ix_workflow_runs_created_at ON workflow_runs USING btree (created_at);

CREATE INDEX ix_workflow_runs_status ON workflow_runs USING btree (status);

CREATE INDEX ix_workflow_runs_workflow ON workflow_runs USING btree (workflow);

CREATE INDEX ix_workflow_step_stats_created_at ON workflow_step_stats USING btree (created_at);

CREATE INDEX ix_workflow_step_stats_run_id ON workflow_step_stats USING btree (run_id);

