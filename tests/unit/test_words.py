from console.core.words import counted, noun


def test_counts_in_words():
    assert counted(1, "forward") == "1 forward"
    assert counted(0, "forward") == "0 forwards"
    assert counted(2, "free port") == "2 free ports"
    assert noun(1, "port") == "port" and noun(3, "port") == "ports"
    assert noun(1, "keeps", "keep") == "keeps" and noun(2, "keeps", "keep") == "keep"
