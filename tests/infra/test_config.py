"""The typed environment configuration: what differs between dev and prod, and what is refused."""

from dataclasses import replace

import pytest

from infra.config import DEV, PROD, Egress, NetworkConfig, environment_config


def test_environments_are_chosen_by_name() -> None:
    assert environment_config("dev") is DEV
    assert environment_config("prod") is PROD
    with pytest.raises(ValueError, match="unknown environment 'staging'"):
        environment_config("staging")


def test_prod_is_the_careful_one() -> None:
    assert (DEV.retain_data, PROD.retain_data) == (False, True)
    assert (DEV.termination_protection, PROD.termination_protection) == (False, True)
    assert (DEV.network.egress, PROD.network.egress) == (Egress.PUBLIC_SUBNETS, Egress.NAT)
    assert PROD.database.multi_az
    assert PROD.database.deletion_protection
    assert DEV.names.source_bucket != PROD.names.source_bucket


def test_network_shape_is_validated() -> None:
    with pytest.raises(ValueError, match="two availability zones"):
        NetworkConfig(availability_zones=("us-east-1a",))
    with pytest.raises(ValueError, match="one or two NAT gateways"):
        NetworkConfig(egress=Egress.NAT, nat_gateways=3)


def test_physical_names_are_unique_per_account_and_region_and_fit_s3() -> None:
    moved = replace(PROD, region="ap-southeast-2")
    assert moved.names.index_bucket != PROD.names.index_bucket
    for config in (DEV, PROD, moved):
        names = config.names
        for bucket in (
            names.source_bucket,
            names.processed_bucket,
            names.index_bucket,
            names.access_log_bucket,
        ):
            assert 3 <= len(bucket) <= 63
            assert bucket == bucket.lower()
