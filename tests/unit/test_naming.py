"""Directory names from subDir templates: what renders, and every way a template is refused."""

from __future__ import annotations

import pytest

from sharevol.errors import InvalidArgument
from sharevol.service.naming import render_directory
from sharevol.service.params import PV_NAME, PVC_NAME, PVC_NAMESPACE, VolumeParameters

UUID = "0123456789abcdef0123456789abcdef"


def params(
    sub_dir: str | None,
    *,
    name: str | None = "data",
    namespace: str | None = "team-a",
    pv: str | None = "pvc-0f1e",
) -> VolumeParameters:
    """Parameters as the external-provisioner sends them with --extra-create-metadata."""
    values: dict[str, str] = {}
    if sub_dir is not None:
        values["subDir"] = sub_dir
    for key, value in ((PVC_NAME, name), (PVC_NAMESPACE, namespace), (PV_NAME, pv)):
        if value is not None:
            values[key] = value
    return VolumeParameters.model_validate(values)


def test_no_template_gives_the_default_uuid() -> None:
    assert render_directory(params(None), UUID) == UUID


def test_namespace_dash_name_template_renders_both_values() -> None:
    template = "${pvc.metadata.namespace}-${pvc.metadata.name}"

    assert render_directory(params(template), UUID) == "team-a-data"


def test_pv_name_template_renders_the_pv_name() -> None:
    assert render_directory(params("${pv.metadata.name}"), UUID) == "pvc-0f1e"


def test_literal_text_around_placeholders_is_kept() -> None:
    template = "vol_${pvc.metadata.name}.v1"

    assert render_directory(params(template), UUID) == "vol_data.v1"


def test_a_template_of_literal_text_only_is_the_directory() -> None:
    assert render_directory(params("shared-data_1.0"), UUID) == "shared-data_1.0"


@pytest.mark.parametrize(
    "template", ["../x", "/abs", "a/b", "a\0b", "a b", "${pvc.metadata.name}/x", "$x", "a\\b"]
)
def test_literal_text_outside_the_safe_set_is_refused(template: str) -> None:
    with pytest.raises(InvalidArgument, match="only letters, digits"):
        render_directory(params(template), UUID)


def test_unknown_placeholder_is_refused_listing_the_known_ones() -> None:
    with pytest.raises(InvalidArgument) as caught:
        render_directory(params("${pvc.metadata.uid}"), UUID)

    message = str(caught.value)
    assert "unknown placeholder ${pvc.metadata.uid}" in message
    for known in ("${pvc.metadata.name}", "${pvc.metadata.namespace}", "${pv.metadata.name}"):
        assert known in message


def test_unclosed_placeholder_is_refused() -> None:
    with pytest.raises(InvalidArgument):
        render_directory(params("${pvc.metadata.name"), UUID)


@pytest.mark.parametrize(
    ("template", "missing"),
    [
        ("${pvc.metadata.name}", {"name": None}),
        ("${pvc.metadata.namespace}", {"namespace": None}),
        ("${pv.metadata.name}", {"pv": None}),
    ],
)
def test_placeholder_without_its_value_points_at_extra_create_metadata(
    template: str, missing: dict[str, None]
) -> None:
    with pytest.raises(InvalidArgument, match="--extra-create-metadata"):
        render_directory(params(template, **missing), UUID)


@pytest.mark.parametrize("value", ["../../etc", "A_B", "a/b", "..", ".", "-a", "a-", "Data", ""])
def test_values_that_are_not_kubernetes_names_are_refused(value: str) -> None:
    with pytest.raises(InvalidArgument, match="not a valid Kubernetes name"):
        render_directory(params("${pvc.metadata.name}", name=value), UUID)


def test_a_result_of_128_characters_is_accepted() -> None:
    template = "${pvc.metadata.name}-" + "x" * (128 - len("data-"))

    directory = render_directory(params(template), UUID)

    assert len(directory) == 128


def test_a_result_over_128_characters_is_refused() -> None:
    template = "${pvc.metadata.namespace}-${pvc.metadata.name}-" + "x" * 118

    with pytest.raises(InvalidArgument, match="not one directory name"):
        render_directory(params(template), UUID)


def test_long_values_make_the_result_too_long() -> None:
    name = "n" * 100
    template = "${pvc.metadata.name}-${pvc.metadata.name}"

    with pytest.raises(InvalidArgument, match="not one directory name"):
        render_directory(params(template, name=name), UUID)


@pytest.mark.parametrize("template", [".", "..", "", ".hidden", "-dash", "_under"])
def test_results_that_are_not_one_plain_component_are_refused(template: str) -> None:
    with pytest.raises(InvalidArgument, match="not one directory name"):
        render_directory(params(template), UUID)


def test_a_trailing_newline_in_the_template_is_refused() -> None:
    with pytest.raises(InvalidArgument):
        render_directory(params("vol\n"), UUID)


def test_a_value_with_a_trailing_newline_is_refused() -> None:
    with pytest.raises(InvalidArgument):
        render_directory(params("${pvc.metadata.name}", name="abc\n"), UUID)
