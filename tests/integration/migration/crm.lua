-- crm.lua -- what the legacy service sends the CRM (legacy_fake.py).
function transform(msg)
  local o = msg.json
  return {json = {customer = o.customer_id, last_order = o.order_id}}
end
