"""The README's reference tables are generated from the code and kept current."""
from pipelines import REPO_ROOT, docs, logs


def test_readme_reference_matches_the_code():
    text = (REPO_ROOT / 'README.md').read_text(encoding='utf-8')
    assert docs.replace_block(text, docs.reference()) == text, (
        'README is stale: run  python -m pipelines.docs --write README.md')


def test_reference_lists_every_option_and_column():
    block = docs.reference()
    parser_options = [o for a in docs.job_parser(logs.OPTIONS)._actions
                      for o in a.option_strings if o not in ('-h', '--help')]
    for option in parser_options:
        assert f'`{option}`' in block, option
    for table, record_type in logs.TABLES.items():
        assert f'table `{table}`' in block
        for field in record_type._fields:
            assert f'`{field}`' in block
