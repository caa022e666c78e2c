-- search.lua -- what the legacy service sends search (legacy_fake.py).
function transform(msg)
  local o = msg.json
  return {json = {id = o.order_id, tenant = o.tenant_id}}
end
