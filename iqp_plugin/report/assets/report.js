document.querySelectorAll('.ba').forEach(function (ba) {
  var range = ba.querySelector('input'), over = ba.querySelector('.over'), line = ba.querySelector('.line');
  function show() { over.style.clipPath = 'inset(0 0 0 ' + range.value + '%)'; line.style.left = range.value + '%'; }
  range.addEventListener('input', show);
  show();
});
function crisp(img) {
  if (img.naturalWidth && img.naturalWidth < img.clientWidth) img.style.imageRendering = 'pixelated';
}
document.querySelectorAll('.ba img').forEach(function (img) {
  if (img.complete) crisp(img); else img.addEventListener('load', function () { crisp(img); });
});
