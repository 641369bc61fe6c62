"""The web console at /console/: pages for release engineers and operators, served by `fwrepo serve` in the
same process and over the same TLS as the API.

Like ``repo_service.http``, it only translates: each page reads or acts through the domain, as the signed-in
user (``sessions``), with the same roles and tenants as the API. ``rendering`` is how a page is answered,
``app`` lists the pages; one module per capability (catalog, campaigns, chargers, audit, administration).
"""
