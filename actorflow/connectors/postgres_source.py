"""PostgreSQL source, two ways:

- ``--NAME-channel C``: every NOTIFY payload on channel C (held by the library until a
  checkpoint covers it, as NOTIFY keeps nothing);
- ``--NAME-table T``: the table's rows in the order of an increasing integer column
  (``id-column``, default id), sending ``payload-column`` (default payload) of each;
  the row's id is its point of reference, so after any failure the source resumes
  right after the last row the cluster has, straight from the table.

Params: ``connection`` (a libpq DSN); one of ``channel`` or ``table``; optional
``id-column``, ``payload-column``, ``poll`` (seconds between polls, default 0.05).
"""

from __future__ import annotations

import select
import time

from actorflow.connectors.common import main
from actorflow.experimental import SourceConnector

BATCH = 5000


def run() -> None:
    import psycopg2
    from psycopg2 import sql

    connector = SourceConnector(
        required_params=["connection"],
        optional_params=["channel", "table", "id_column", "payload_column", "poll"],
    )
    params = connector.params
    if bool(params.channel) == bool(params.table):
        raise SystemExit("postgres source: give exactly one of --NAME-channel, --NAME-table")
    connector.connect()
    conn = psycopg2.connect(params.connection)
    conn.autocommit = True
    cur = conn.cursor()
    if params.channel:
        cur.execute(sql.SQL("LISTEN {}").format(sql.Identifier(params.channel)))
        print(f"postgres source: listening on {params.channel}", flush=True)
        while True:
            if select.select([conn], [], [], 1.0)[0]:
                conn.poll()
                while conn.notifies:
                    connector.write(conn.notifies.pop(0).payload.encode())
    query = sql.SQL("SELECT {id}, {payload} FROM {table} WHERE {id} > %s ORDER BY {id} LIMIT %s")
    query = query.format(
        id=sql.Identifier(params.id_column or "id"),
        payload=sql.Identifier(params.payload_column or "payload"),
        table=sql.Identifier(params.table),
    )
    last = connector.resume_point
    print(f"postgres source: reading {params.table} after row {last}", flush=True)
    while True:
        cur.execute(query, (last, BATCH))
        rows = cur.fetchall()
        for row_id, payload in rows:
            data = payload if isinstance(payload, bytes | memoryview) else str(payload).encode()
            connector.write(bytes(data), point_of_ref=int(row_id))
            last = int(row_id)
        if len(rows) < BATCH:
            connector.flush()
            time.sleep(float(params.poll or 0.05))


if __name__ == "__main__":
    main(run)
