"""The text gateway: web chat and WeChat conversations through the same flows, routing and tickets."""
