-- billing.lua -- what the legacy service sends billing (legacy_fake.py).
function transform(msg)
  local o = msg.json
  return {json = {invoice_ref = o.order_id, amount_cents = o.amount_cents}}
end
