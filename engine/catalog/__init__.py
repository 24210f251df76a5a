"""The product catalog kept from events, and what it feeds: template data and fan-out alerts.

- ``products``: what an event says about products (the catalog source's ``Product Updated``,
  and the product properties of shopper events), checked and normalised;
- ``batch``: the decide transaction's part: products, carts, views, purchases, pairs, and the
  fan-out jobs a price drop or a restock starts;
- ``fanout``: walks a job's contacts a chunk per transaction and enrolls them;
- ``send_data``: at send time, the current products for templates (cart, recently viewed,
  recommendations) and the re-check that drops an alert the catalog no longer supports.
"""
