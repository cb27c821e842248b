"use strict";
document.querySelector('#login input[name="next"]').value =
  new URLSearchParams(location.search).get("next") || "/";
