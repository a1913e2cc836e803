"""Provisioning (controller) and publishing (node): the storage logic behind the CSI servicers."""
