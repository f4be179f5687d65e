"""Public means listed in hfssl.__all__, importable, with a docstring."""

import hfssl


def test_every_public_name_is_importable_and_documented():
    assert hfssl.__version__
    for name in hfssl.__all__:
        if name == "__version__":
            continue
        value = getattr(hfssl, name)
        assert (value.__doc__ or "").strip(), f"hfssl.{name} has no docstring"
