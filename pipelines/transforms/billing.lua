-- billing.lua -- billing wants integer cents and nothing else.

function transform(msg)
  local o = msg.json
  return {
    json = {
      invoice_ref = o.order_id,
      tenant = o.tenant_id,
      amount_cents = o.amount_cents,
      currency = o.currency,
    },
    headers = { ["X-Tenant"] = o.tenant_id },
  }
end
