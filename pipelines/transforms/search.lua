-- search.lua -- the search index takes one document per order, PUT at
-- its own URL, so a redelivery overwrites instead of duplicating.

function transform(msg)
  local o = msg.json
  local skus = json.array()
  for i, item in ipairs(o.items) do
    skus[i] = item.sku
  end
  return {
    method = "PUT",
    path = "/" .. o.order_id,
    json = {
      id = o.order_id,
      tenant = o.tenant_id,
      status = o.status,
      skus = skus,
      sequence = o.sequence,
    },
  }
end
