"""asv suites for orcd-toolkit (configuration: ../asv.conf.json)."""
