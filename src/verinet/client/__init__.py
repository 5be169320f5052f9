"""The Verinet client SDK: publish models, ask for verified inference, check the evidence.

```python
from verinet.client import Client

client = Client.connect("http://127.0.0.1:8545", contracts, account)
result = client.infer(model_id, {"x": x}, mode="quorum", k=3)   # verified by default
result.outputs["probabilities"], result.verdict.checks
```
"""

from verinet.client.sdk import AsyncClient, Client, Verdict, VerifiedResult

__all__ = ["AsyncClient", "Client", "Verdict", "VerifiedResult"]
