import pytest

from meshsite.secretbox import SecretUnreadable, reseal, seal, unseal


def test_sealed_value_opens_and_does_not_contain_the_plaintext(settings):
    sealed = seal("s3cret-password")
    assert "s3cret" not in sealed
    assert sealed.startswith("fernet:")
    assert unseal(sealed) == "s3cret-password"


def test_sealing_twice_gives_different_ciphertexts():
    assert seal("same") != seal("same")


def test_value_sealed_under_an_old_key_opens_with_it_in_fallbacks_and_reseals_to_the_new(settings):
    settings.SECRET_KEY = "old-key-" + "x" * 50
    sealed = seal("rotating")
    settings.SECRET_KEY_FALLBACKS = [settings.SECRET_KEY]
    settings.SECRET_KEY = "new-key-" + "y" * 50
    assert unseal(sealed) == "rotating"
    fresh = reseal(sealed)
    settings.SECRET_KEY_FALLBACKS = []
    assert unseal(fresh) == "rotating"
    with pytest.raises(SecretUnreadable):
        unseal(sealed)


def test_tampered_or_foreign_values_are_refused():
    sealed = seal("value")
    with pytest.raises(SecretUnreadable):
        unseal(sealed[:-4] + "AAAA")
    with pytest.raises(SecretUnreadable):
        unseal("plaintext")
