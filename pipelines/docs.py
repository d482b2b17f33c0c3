"""Generates the README's option and table reference from the code.

``python -m pipelines.docs`` prints it; ``python -m pipelines.docs --write
README.md`` replaces the block between the GENERATED markers.  A test fails
when the README and the code differ, so the tables cannot go stale.
"""
import argparse
import importlib
import sys

from pipelines import JOBS
from pipelines.options import job_parser
from transforms import schemas

BEGIN = '<!-- BEGIN GENERATED REFERENCE (python -m pipelines.docs --write README.md) -->'
END = '<!-- END GENERATED REFERENCE -->'


def _cell(text):
    return ' '.join(str(text).split()).replace('|', '\\|')


def options_table(options_cls) -> str:
    parser = job_parser(options_cls)
    rows = ['| option | default | meaning |', '|---|---|---|']
    for action in parser._actions:
        if not action.option_strings or action.dest == 'help':
            continue
        name = ' / '.join(f'`{o}`' for o in action.option_strings)
        default = action.default
        help_text = (action.help or '').replace(' (default: %(default)s)', '')
        help_text = help_text.replace('%(default)s', str(default))
        if action.choices:
            help_text += f' (one of: {", ".join(map(str, action.choices))})'
        rows.append(f'| {name} | `{default}` | {_cell(help_text)} |')
    return '\n'.join(rows)


def schema_table(record_type) -> str:
    from transforms.io import bigquery  # pylint: disable=import-outside-toplevel
    rows = ['| column | type | nullable |', '|---|---|---|']
    for field in schemas.arrow_schema(record_type):
        rows.append(f'| `{field.name}` | {field.type} | '
                    f'{"yes" if field.nullable else "no"} |')
    # The column the BigQuery sink adds to every row.
    field = bigquery.WRITTEN_AT_FIELD
    rows.append(f'| `{field["name"]}` | {field["type"].lower()} (BigQuery '
                f'only: when the sink wrote the row) | '
                f'{"yes" if field["mode"] == "NULLABLE" else "no"} |')
    return '\n'.join(rows)


def reference() -> str:
    parts = []
    for job, module_name in JOBS.items():
        module = importlib.import_module(module_name)
        parts.append(f'### `{job}` options\n\n{options_table(module.OPTIONS)}')
        for table, record_type in module.TABLES.items():
            parts.append(f'#### `{job}` table `{table}`\n\n'
                         f'{schema_table(record_type)}')
    return '\n\n'.join(parts)


def replace_block(text: str, block: str) -> str:
    start, end = text.index(BEGIN), text.index(END)
    return text[:start] + BEGIN + '\n\n' + block + '\n\n' + text[end:]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--write', metavar='README',
                        help='replace the generated block of this file')
    args = parser.parse_args(argv)
    block = reference()
    if args.write:
        with open(args.write, encoding='utf-8') as f:
            text = f.read()
        with open(args.write, 'w', encoding='utf-8') as f:
            f.write(replace_block(text, block))
    else:
        sys.stdout.write(block + '\n')


if __name__ == '__main__':
    main()
