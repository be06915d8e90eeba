"""Flavors and images as the SDK parses them."""

from __future__ import annotations

import uuid

from huaweicloudsdkmodelarts.v1 import ListFlavorsRequest, ListImageRequest, ShowImageRequest

from .conftest import expect_error

KB_PER_GB = 1024 * 1024


def test_list_flavors_data_equals_flavors_memory_in_kb(alice):
    page = alice.client.list_flavors(ListFlavorsRequest())
    assert [f.to_dict() for f in page.data] == [f.to_dict() for f in page.flavors]
    by_id = {f.id: f for f in page.data}
    assert set(by_id) == {"modelarts.vm.cpu.2u", "modelarts.vm.cpu.4u", "modelarts.vm.cpu.8u", "modelarts.vm.gpu.t4"}
    assert page.total == len(page.data) == 4 and page.current == 1
    cpu2 = by_id["modelarts.vm.cpu.2u"]
    assert type(cpu2.memory) is int and cpu2.memory == 8 * KB_PER_GB
    assert type(cpu2.vcpus) is int and cpu2.vcpus == 2
    assert (cpu2.arch, cpu2.category, cpu2.feature) == ("x86_64", "CPU", "NOTEBOOK")
    assert cpu2.free is False and cpu2.sold_out is False
    assert "EVS" in cpu2.storages
    assert by_id["modelarts.vm.cpu.8u"].memory == 32 * KB_PER_GB
    gpu = by_id["modelarts.vm.gpu.t4"]
    assert gpu.category == "GPU" and gpu.gpu.gpu == 1 and gpu.gpu.type == "T4"


def test_list_flavors_filters_and_paging(alice):
    c = alice.client
    free = c.list_flavors(ListFlavorsRequest(feature="DEFAULT"))
    assert [f.id for f in free.data] == ["modelarts.vm.cpu.free"] and free.data[0].free is True
    gpus = c.list_flavors(ListFlavorsRequest(category="GPU"))
    assert [f.id for f in gpus.data] == ["modelarts.vm.gpu.t4"]
    by_vcpus = c.list_flavors(ListFlavorsRequest(sort_key="vcpus", sort_dir="ASC", limit=2, offset=0))
    assert [f.vcpus for f in by_vcpus.data] == [2, 4]
    assert (by_vcpus.total, by_vcpus.size, by_vcpus.pages) == (4, 2, 2)
    expect_error(lambda: c.list_flavors(ListFlavorsRequest(sort_key="price")), 400, "ModelArts.6303")


def test_list_and_show_image(alice):
    c = alice.client
    page = c.list_image(ListImageRequest())
    by_name = {img.name: img for img in page.data}
    assert {"notebook-python3.11", "notebook-scipy", "notebook-cuda", "ssh-devbox"} <= set(by_name)
    assert page.total >= 4
    img = by_name["notebook-python3.11"]
    assert (img.type, img.status, img.arch) == ("BUILD_IN", "ACTIVE", "x86_64")
    assert img.resource_categories == ["CPU", "GPU"] and "NOTEBOOK" in img.dev_services
    assert type(img.size) is int and type(img.create_at) is int
    shown = c.show_image(ShowImageRequest(id=img.id))
    assert (shown.id, shown.name, shown.tag, shown.swr_path, shown.type) == (
        img.id,
        img.name,
        img.tag,
        img.swr_path,
        img.type,
    )
    assert shown.support_res_categories == shown.resource_categories
    assert shown.swr_path.endswith(f"/{img.name}:{img.tag}")
    assert by_name["ssh-devbox"].dev_services == ["SSH"]


def test_image_filters(alice):
    c = alice.client
    exact = c.list_image(ListImageRequest(name="notebook-scipy", name_fuzzy_match=False))
    assert [i.name for i in exact.data] == ["notebook-scipy"]
    fuzzy = c.list_image(ListImageRequest(name="notebook"))
    assert {i.name for i in fuzzy.data} >= {"notebook-python3.11", "notebook-scipy", "notebook-cuda"}
    assert "ssh-devbox" not in {i.name for i in fuzzy.data}


def test_show_unknown_image_is_6404(alice):
    exc = expect_error(lambda: alice.client.show_image(ShowImageRequest(id=str(uuid.uuid4()))), 400, "ModelArts.6404")
    assert "does not exist" in exc.error_msg
