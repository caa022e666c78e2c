-- crm.lua -- the CRM tracks customers' last orders; cancelled orders
-- are none of its business.

function transform(msg)
  local o = msg.json
  if o.status == "cancelled" then
    return nil -- skipped for this sink only
  end
  return {
    json = {
      customer = o.customer,
      last_order = o.order_id,
      last_order_at = o.created_at,
      status = o.status,
    },
  }
end
