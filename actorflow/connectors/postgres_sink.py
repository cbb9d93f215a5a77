"""PostgreSQL insert sink, exactly once: each checkpoint's outputs are inserted in one
transaction together with that checkpoint's entry in a log table, so an output is
inserted once across worker crashes, rollbacks and restarts (and restarts of this
script: the log is in the database).

Each output (the app's decoder's result) is a dict of column -> value, or a tuple or
list of values for ``columns``. Params: ``connection`` (a libpq DSN), ``table``;
optional ``columns`` (comma-separated), ``log-table`` (default actorflow_commits).
"""

from __future__ import annotations

from actorflow.connectors.common import main
from actorflow.experimental import SinkConnector


def run() -> None:
    import psycopg2
    from psycopg2 import sql

    connector = SinkConnector(
        required_params=["connection", "table"], optional_params=["columns", "log_table"]
    )
    params = connector.params
    columns = [c.strip() for c in params.columns.split(",")] if params.columns else None
    log_table = sql.Identifier(params.log_table or "actorflow_commits")
    table = sql.Identifier(params.table)
    conn = psycopg2.connect(params.connection)
    with conn, conn.cursor() as cur:
        cur.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (sink text PRIMARY KEY, checkpoint bigint NOT NULL)"
            ).format(log_table)
        )

    def committed(sink: str) -> int:
        with conn, conn.cursor() as cur:
            cur.execute(
                sql.SQL("SELECT checkpoint FROM {} WHERE sink = %s").format(log_table), (sink,)
            )
            row = cur.fetchone()
        return row[0] if row else 0

    def commit(sink: str, checkpoint: int, outputs: list) -> None:
        with conn, conn.cursor() as cur:  # one transaction: the rows and the log entry
            for out in outputs:
                names = list(out) if isinstance(out, dict) else columns
                values = list(out.values()) if isinstance(out, dict) else list(out)
                if names is None:
                    raise ValueError("an output that is not a dict needs --NAME-columns")
                cur.execute(
                    sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
                        table,
                        sql.SQL(", ").join(map(sql.Identifier, names)),
                        sql.SQL(", ").join(sql.Placeholder() * len(values)),
                    ),
                    values,
                )
            cur.execute(
                sql.SQL(
                    "INSERT INTO {} (sink, checkpoint) VALUES (%s, %s) ON CONFLICT (sink) "
                    "DO UPDATE SET checkpoint = EXCLUDED.checkpoint"
                ).format(log_table),
                (sink, checkpoint),
            )

    connector.listen()
    print(f"postgres sink: listening for {params.connector_name}", flush=True)
    connector.serve(commit, committed)


if __name__ == "__main__":
    main(run)
