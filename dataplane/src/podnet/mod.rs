//! Pod networking: veth pairs, addresses and routes over rtnetlink, and pod IPs from the node's podCIDR.
