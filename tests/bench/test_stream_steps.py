from bench import stream_steps


def test_every_bundle_of_the_stream_is_charged_to_its_step(capsys):
    summary, steps, cpu = stream_steps.main(['trades', '400', '--top', '3'])
    printed = capsys.readouterr().out
    # The decoding step ran once per tick with records, and its CPU counts.
    assert steps['DecodePartials/ParDo(PartialsFn)'][1] > 1
    assert all(seconds >= 0 and bundles > 0
               for seconds, bundles in steps.values())
    assert 0 < sum(seconds for seconds, _ in steps.values()) <= cpu
    assert summary['read'] == 400
    assert printed.count('\n| ') == 3 + 1     # the header and three steps
    assert 'synthetic://trades?events=400' in printed
