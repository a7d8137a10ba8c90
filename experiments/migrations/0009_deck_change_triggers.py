"""Triggers that write ``deck_changes`` rows (see ``DeckChange``), on SQLite and PostgreSQL.

The SQL is generated here from the frozen table below (not from the live models): a later
change of what the deck watches is a new migration. The jobs table has no trigger: only the job
syncer writes it, tens of thousands of rows a pass, and it records the experiments it touched
itself, one statement per batch (``syncing.jobs.write_jobs``); a trigger per row cost a third
of the table's write rate.
"""

import secrets

from django.db import migrations

# table -> (watched columns of an UPDATE, [(experiment, group, layout) per changed row]);
# ``{r}`` is NEW or OLD. An UPDATE that changes no watched column writes nothing.
EXPERIMENT = ("{r}.id", "NULL", "{f}")
WATCHED = {
    "experiments": (
        [
            "name",
            "desired_state",
            "current_state",
            "flags",
            "nodes",
            "gpus",
            "accelerator",
            "base_command",
            "tool_path",
            "git_ref",
            "description",
            "tags",
            "starred",
            "updated_at",
            "desired_changed_at",
            "parked_reason",
            "reconcile_note",
        ],
        [EXPERIMENT],
    ),
    "experiment_groups": (
        ["name", "flags", "order", "collapsed", "updated_at"],
        [("NULL", "{r}.id", "{layout}")],
    ),
    "experiment_group_members": (
        ["group_id", "experiment_id", "order"],
        [("{r}.experiment_id", "{r}.group_id", "{f}")],
    ),
    "checkpoints": (["experiment_id", "epoch", "missing"], [("{r}.experiment_id", "NULL", "{f}")]),
    "launches": (
        ["experiment_id", "job_id", "status"],
        [("{r}.experiment_id", "NULL", "{f} WHERE {r}.experiment_id IS NOT NULL")],
    ),
}
OPS = ("INSERT", "UPDATE", "DELETE")


def _inserts(table: str, op: str, false: str, true: str) -> list[str]:
    """The INSERT statements one changed row runs (OLD and NEW for an update)."""
    refs = {"INSERT": ["NEW"], "UPDATE": ["OLD", "NEW"], "DELETE": ["OLD"]}[op]
    if op == "UPDATE":  # groups reordered: the whole deck; else that group's section
        layout = f'CASE WHEN OLD."order" = NEW."order" THEN {false} ELSE {true} END'
    else:
        layout = true  # a group added or removed
    statements = []
    for r in refs:
        for experiment, group, rest in WATCHED[table][1]:
            values = ", ".join(
                part.format(r=r, f=false, layout=layout) for part in (experiment, group, rest)
            )
            statements.append(
                f"INSERT INTO deck_changes (experiment_id, group_id, layout) SELECT {values};"
            )
    return statements


def _when(table: str, distinct: str) -> str:
    return " OR ".join(f'OLD."{c}" {distinct} NEW."{c}"' for c in WATCHED[table][0])


def sqlite_sql() -> list[str]:
    out = []
    for table in WATCHED:
        for op in OPS:
            when = f" WHEN {_when(table, 'IS NOT')}" if op == "UPDATE" else ""
            body = " ".join(_inserts(table, op, "0", "1"))
            out.append(
                f"CREATE TRIGGER deck_{table}_{op.lower()} AFTER {op} ON {table}"
                f"{when} BEGIN {body} END;"
            )
    return out


def postgresql_sql() -> list[str]:
    out = []
    for table in WATCHED:
        for op in OPS:
            name = f"deck_{table}_{op.lower()}"
            body = " ".join(_inserts(table, op, "false", "true"))
            out.append(
                f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ "
                f"BEGIN {body} RETURN NULL; END $$;"
            )
            when = f" WHEN ({_when(table, 'IS DISTINCT FROM')})" if op == "UPDATE" else ""
            out.append(
                f"CREATE TRIGGER {name} AFTER {op} ON {table} FOR EACH ROW{when} "
                f"EXECUTE FUNCTION {name}();"
            )
    return out


def drop_sql(vendor: str) -> list[str]:
    out = []
    for table in WATCHED:
        for op in OPS:
            name = f"deck_{table}_{op.lower()}"
            if vendor == "postgresql":
                out.append(f"DROP TRIGGER IF EXISTS {name} ON {table};")
                out.append(f"DROP FUNCTION IF EXISTS {name}();")
            else:
                out.append(f"DROP TRIGGER IF EXISTS {name};")
    return out


def create_triggers(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "sqlite":
        statements = sqlite_sql()
    elif vendor == "postgresql":
        statements = postgresql_sql()
    else:
        raise RuntimeError(f"SkyDeck's deck triggers support SQLite and PostgreSQL, not {vendor}")
    for statement in statements:
        schema_editor.execute(statement)
    apps.get_model("experiments", "DeckState").objects.create(token=secrets.token_hex(8))


def drop_triggers(apps, schema_editor):
    for statement in drop_sql(schema_editor.connection.vendor):
        schema_editor.execute(statement)
    apps.get_model("experiments", "DeckState").objects.all().delete()


class Migration(migrations.Migration):
    dependencies = [("experiments", "0008_deck_indexes_and_changes")]

    operations = [migrations.RunPython(create_triggers, drop_triggers)]
